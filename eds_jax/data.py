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


def write_text(path: str, text: str) -> None:
    """Write a text file via a temporary file and a rename: never half-written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # processes of a multi-host run may write the same file
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def check_output_path(path: str) -> None:
    """Fail before any work when `path` cannot be written as a file (a directory, a parent that is
    a file, an unwritable directory)."""
    if not path or os.path.isdir(path):
        raise ValueError(f"output {path!r} is a directory or empty; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"output {path!r}: {parent!r} is a file, so the output cannot be created")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"output {path!r}: directory {parent!r} is not writable")


def write_jsonl(path: str, rows) -> None:
    """One JSON object per line, written atomically (`write_text`)."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_partial(path: str, run_key: str, rows) -> None:
    """A killed run's finished rows: the run's key on the first line, then the rows (atomically)."""
    write_jsonl(path, [{"run": run_key}] + list(rows))


def read_partial(path, run_key: str) -> list[dict]:
    """The rows `write_partial` kept for the run `run_key`; none when the file is missing or
    belongs to another run (then it is overwritten as the new run goes)."""
    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[0].get("run") != run_key:
        return []
    return lines[1:]


def _rows(path: str, field: Optional[str]):
    """Yield (row, where) for each prompt row of `path`: a string or a dict of fields."""
    if not os.path.isfile(path):
        raise PromptFileError(f"prompt file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8") as f:
        if ext == ".txt":
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield line.rstrip("\n"), f"line {lineno}"
        elif ext == ".json":
            try:
                rows = json.load(f)
            except json.JSONDecodeError as err:
                raise PromptFileError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
            if not isinstance(rows, list):
                raise PromptFileError(f"{path}: expected a JSON list, got {type(rows).__name__}")
            for i, row in enumerate(rows):
                yield row, f"item {i}"
        elif ext == ".jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PromptFileError(f"{path}, line {lineno}: invalid JSON: {err.msg}") from err
                yield row, f"line {lineno}"
        elif ext == ".csv":
            reader = csv.DictReader(f)
            columns = (field,) if field else PROMPT_FIELDS
            if not reader.fieldnames or not any(c in reader.fieldnames for c in columns):
                raise PromptFileError(f"{path}: no column {' or '.join(columns)!r} "
                                      f"(columns: {reader.fieldnames})")
            for rowno, row in enumerate(reader, 2):  # row 1 is the header
                if None in row:
                    raise PromptFileError(f"{path}, row {rowno}: more cells than columns")
                yield {k: v for k, v in row.items() if v is not None}, f"row {rowno}"
        else:
            raise PromptFileError(f"{path}: unknown prompt file type {ext!r}; expected .txt, "
                                  ".json, .jsonl or .csv")


def load_prompts(path: str, field: Optional[str] = None, limit: Optional[int] = None) -> list[str]:
    """Read prompts from `path`; at most `limit` of them (the first ones). Empty file -> error."""
    prompts = [_prompt_of(row, path, where, field) for row, where in _rows(path, field)]
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts[:limit] if limit else prompts


def load_prompts_with(path: str, other_field: str, field: Optional[str] = None,
                      limit: Optional[int] = None) -> tuple[list[str], list[str]]:
    """Prompts and, for each, the string in `other_field` (e.g. a category); a row without it is an error."""
    prompts, others = [], []
    for row, where in _rows(path, field):
        prompts.append(_prompt_of(row, path, where, field))
        value = row.get(other_field) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise PromptFileError(f"{path}, {where}: no string field {other_field!r}")
        others.append(value)
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return (prompts[:limit], others[:limit]) if limit else (prompts, others)
