"""`benchmarks/versus_runs.py`: two evaluations compared over their shared baseline."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("versus_runs", os.path.join(ROOT, "benchmarks", "versus_runs.py"))
versus_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(versus_runs)


def write(directory, rows):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "responses.jsonl"), "w") as f:
        for s, kind, method, prompt, outcome in rows:
            f.write(json.dumps({"set": s, "kind": kind, "method": method, "prompt": prompt,
                                "response": f"{method}:{prompt}" if method != "baseline" else f"base:{prompt}",
                                "outcome": outcome}) + "\n")


def test_counts_removed_refusals_and_pairs_the_delta(tmp_path):
    base = [("b1", "benign", "baseline", "p1", "refusal"), ("b1", "benign", "baseline", "p2", "refusal"),
            ("b1", "benign", "baseline", "p3", "helpful"), ("h1", "harmful", "baseline", "q1", "refusal")]
    write(tmp_path / "a", base + [("b1", "benign", "eds", "p1", "helpful"), ("b1", "benign", "eds", "p2", "helpful"),
                                  ("b1", "benign", "eds", "p3", "helpful"), ("h1", "harmful", "eds", "q1", "refusal")])
    write(tmp_path / "b", base + [("b1", "benign", "actadd", "p1", "helpful"), ("b1", "benign", "actadd", "p2", "refusal"),
                                  ("b1", "benign", "actadd", "p3", "refusal"), ("h1", "harmful", "actadd", "q1", "helpful")])
    rows = {r["set"]: r for r in versus_runs.compare(versus_runs.load(tmp_path / "a"), versus_runs.load(tmp_path / "b"),
                                                     "eds", "actadd", "baseline")}
    b1, h1 = rows["b1"], rows["h1"]
    assert b1["count"] == {"base": 1, "a": 3, "b": 1} and b1["refused"] == 2
    assert b1["removed"] == {"a": (2, 0), "b": (1, 1)}
    assert b1["a_minus_b"]["delta"] == pytest.approx(2 / 3)
    assert h1["removed"] == {"a": (0, 0), "b": (1, 0)} and h1["a_minus_b"]["delta"] == pytest.approx(1.0)
    assert "| b1 | helpful | 1/3 | 3/3 | 1/3 | 2 of 2 (0) | 1 of 2 (1) |" in versus_runs.table(list(rows.values()), "eds", "actadd")


def test_refuses_runs_whose_baselines_differ(tmp_path):
    write(tmp_path / "a", [("b1", "benign", "baseline", "p1", "refusal"), ("b1", "benign", "eds", "p1", "helpful")])
    write(tmp_path / "b", [("b1", "benign", "baseline", "p1", "refusal"), ("b1", "benign", "actadd", "p1", "helpful")])
    with open(tmp_path / "b" / "responses.jsonl") as f:
        text = f.read().replace("base:p1", "another answer")
    with open(tmp_path / "b" / "responses.jsonl", "w") as f:
        f.write(text)
    with pytest.raises(ValueError, match="baseline responses differ on b1"):
        versus_runs.compare(versus_runs.load(tmp_path / "a"), versus_runs.load(tmp_path / "b"), "eds", "actadd", "baseline")
