"""Prompt files: .txt (one per line), .json (list of strings or objects), .jsonl, .csv.

Objects and CSV rows give their prompt in a field (`instruction` or `prompt` unless named). A
malformed row is an error that names the file and the row. A path that starts with `data:` names a
file of the data the package ships (`eds_jax/datasets/`, see its README), wherever the package is.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Optional

PROMPT_FIELDS = ("instruction", "prompt")
DATA_PREFIX = "data:"
DATA_ROOT = os.path.dirname(os.path.abspath(__file__))


class PromptFileError(ValueError):
    pass


def resolve(path: str) -> str:
    """The file `path` names: `data:NAME` is NAME under the shipped data folder; any other path is
    the user's own file, as given."""
    if not path.startswith(DATA_PREFIX):
        return path
    name = path[len(DATA_PREFIX):].lstrip("/")
    full = os.path.normpath(os.path.join(DATA_ROOT, name))
    if not full.startswith(DATA_ROOT + os.sep):
        raise PromptFileError(f"{path!r} points outside the shipped data folder {DATA_ROOT}")
    return full


def data_file(name: str) -> str:
    """The `data:` path of a shipped file, e.g. data_file("public/jailbreakbench.json")."""
    return DATA_PREFIX + name


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


def _rows(path: str, field: Optional[str]):
    """Yield (row, where) for each prompt row of `path`: a string or a dict of fields."""
    path = resolve(path)
    if not os.path.isfile(path):
        raise PromptFileError(f"prompt file {path!r} does not exist")
    try:
        yield from _parse(path, field)
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def _parse(path: str, field: Optional[str]):
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


def check_limit(limit: Optional[int]) -> None:
    """A prompt limit is None/0 (all) or a positive count; a negative one would drop prompts from
    the end without a word."""
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 0):
        raise PromptFileError(f"limit={limit!r}: expected a count >= 0 (0 or None = all)")


def load_prompts(path: str, field: Optional[str] = None, limit: Optional[int] = None) -> list[str]:
    """Read prompts from `path`; at most `limit` of them (the first ones). Empty file -> error."""
    check_limit(limit)
    prompts = [_prompt_of(row, path, where, field) for row, where in _rows(path, field)]
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts[:limit] if limit else prompts


def load_prompts_with(path: str, other_field: str, field: Optional[str] = None,
                      limit: Optional[int] = None) -> tuple[list[str], list[str]]:
    """Prompts and, for each, the string in `other_field` (e.g. a category); a row without it is an error."""
    check_limit(limit)
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
