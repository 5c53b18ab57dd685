"""What the subprocess benchmarks share: each measurement runs in its own Python process (so JAX
and PyTorch never share threads or an accelerator) and reports one JSON line."""
from __future__ import annotations

import json
import subprocess
import sys

MARK = "RESULT "


def report(result: dict) -> None:
    """A worker's last word: its result as one marked JSON line on stdout."""
    print(MARK + json.dumps(result), flush=True)


def run_worker(script: str, job: dict, env: dict) -> dict:
    """Run `script --worker JOB` and return the result it reported; exit with its output if it failed."""
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
        raise SystemExit(f"{job['impl']} batch {job['batch']} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(MARK):])
