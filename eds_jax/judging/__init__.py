"""Judging responses: refusal substrings (`refusal`), helpful / refusal / incoherent (`helpfulness`)."""
