"""Prompt files: .txt (one per line), .json (list of strings or objects), .jsonl, .csv.

Objects and CSV rows give their prompt in a field (`instruction` or `prompt` unless named). A
malformed row is an error that names the file and the row.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Optional

PROMPT_FIELDS = ("instruction", "prompt")


class PromptFileError(ValueError):
    pass


def _prompt_of(row, path: str, where: str, field: Optional[str]) -> str:
    if isinstance(row, str):
        text = row
    elif isinstance(row, dict):
        fields = (field,) if field else PROMPT_FIELDS
        found = [f for f in fields if isinstance(row.get(f), str)]
        if not found:
            raise PromptFileError(f"{path}, {where}: no string field {' or '.join(fields)!r} "
                                  f"(keys: {sorted(row)})")
        text = row[found[0]]
    else:
        raise PromptFileError(f"{path}, {where}: expected a string or an object, got "
                              f"{type(row).__name__}")
    if not text.strip():
        raise PromptFileError(f"{path}, {where}: empty prompt")
    return text


def write_jsonl(path: str, rows) -> None:
    """Write one JSON object per line via a temporary file and a rename: never half-written."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # processes of a multi-host run may write the same file
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_prompts(path: str, field: Optional[str] = None, limit: Optional[int] = None) -> list[str]:
    """Read prompts from `path`; at most `limit` of them (the first ones). Empty file -> error."""
    if not os.path.isfile(path):
        raise PromptFileError(f"prompt file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    prompts: list[str] = []
    with open(path, encoding="utf-8") as f:
        if ext == ".txt":
            prompts = [line.rstrip("\n") for line in f if line.strip()]
        elif ext == ".json":
            try:
                rows = json.load(f)
            except json.JSONDecodeError as err:
                raise PromptFileError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
            if not isinstance(rows, list):
                raise PromptFileError(f"{path}: expected a JSON list, got {type(rows).__name__}")
            prompts = [_prompt_of(r, path, f"item {i}", field) for i, r in enumerate(rows)]
        elif ext == ".jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PromptFileError(f"{path}, line {lineno}: invalid JSON: {err.msg}") from err
                prompts.append(_prompt_of(row, path, f"line {lineno}", field))
        elif ext == ".csv":
            reader = csv.DictReader(f)
            columns = (field,) if field else PROMPT_FIELDS
            if not reader.fieldnames or not any(c in reader.fieldnames for c in columns):
                raise PromptFileError(f"{path}: no column {' or '.join(columns)!r} "
                                      f"(columns: {reader.fieldnames})")
            for rowno, row in enumerate(reader, 2):  # row 1 is the header
                if None in row:
                    raise PromptFileError(f"{path}, row {rowno}: more cells than columns")
                prompts.append(_prompt_of({k: v for k, v in row.items() if v is not None},
                                          path, f"row {rowno}", field))
        else:
            raise PromptFileError(f"{path}: unknown prompt file type {ext!r}; expected .txt, "
                                  ".json, .jsonl or .csv")
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts[:limit] if limit else prompts
