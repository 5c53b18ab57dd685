"""Evaluation: the compared methods (`methods`), rates and intervals (`metrics`), the run and its
report (`run.evaluate(options.EvalOptions(...))`)."""
