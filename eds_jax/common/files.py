"""Files written so that a crash never leaves one half-written, and a killed run's finished rows.

Every output goes through `write_text` (a temporary file, then a rename); `write_partial` /
`read_partial` keep the finished rows of a long run under a key that says which run they belong to.
"""
from __future__ import annotations

import json
import logging
import os


def write_text(path: str, text: str) -> None:
    """Write a text file via a temporary file and a rename: never half-written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # processes of a multi-host run may write the same file
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:  # disk full, file too large, interrupted: leave no temporary behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    try:  # os.access says yes to root everywhere; only creating a file tells (e.g. under /proc)
        import tempfile
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ValueError(f"output {path!r}: cannot create a file in {parent!r} ({err.strerror})") from None


def write_jsonl(path: str, rows) -> None:
    """One JSON object per line, written atomically (`write_text`)."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: str) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped): the reverse of `write_jsonl`."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_partial(path: str, run_key: str, rows) -> None:
    """A killed run's finished rows: the run's key on the first line, then the rows (atomically)."""
    write_jsonl(path, [{"run": run_key}] + list(rows))


def read_partial(path, run_key: str) -> list[dict]:
    """The rows `write_partial` kept for the run `run_key`; none when the file is missing or
    belongs to another run (then it is overwritten as the new run goes)."""
    if not path or not os.path.isfile(path):
        return []
    try:
        lines = read_jsonl(path)
        if lines and not all(isinstance(line, dict) for line in lines):
            raise ValueError("a line is not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        # not written by write_partial (which is atomic): keep it aside, start the run afresh
        aside = f"{path}.corrupt"
        os.replace(path, aside)
        logging.getLogger("eds_jax").warning("%s is not a partial-results file (%s); moved it to %s "
                                             "and started afresh", path, err, aside)
        return []
    if not lines or lines[0].get("run") != run_key:
        return []
    return lines[1:]
