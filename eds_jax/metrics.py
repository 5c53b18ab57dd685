"""Evaluation metrics: compliance / refusal rates with bootstrap 95% intervals, paired deltas, a table."""
from __future__ import annotations

from typing import Sequence

import numpy as np

BENIGN, HARMFUL = "benign", "harmful"
METRIC = {BENIGN: "compliance", HARMFUL: "refusal"}


def rate_interval(outcomes: Sequence[bool], num_boot: int = 2000, seed: int = 0) -> dict:
    """The rate of True outcomes with a percentile-bootstrap 95% interval, and the counts."""
    x = np.asarray(outcomes, bool)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty 1-D list of outcomes, got shape {x.shape}")
    resampled = x[np.random.RandomState(seed).randint(0, x.size, (num_boot, x.size))].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"rate": float(x.mean()), "low": float(low), "high": float(high), "count": int(x.sum()),
            "n": int(x.size)}


def paired_delta(outcomes: Sequence[bool], baseline: Sequence[bool], num_boot: int = 2000,
                 seed: int = 0) -> dict:
    """rate(outcomes) - rate(baseline) on the same prompts, with a paired-bootstrap 95% interval."""
    x, b = np.asarray(outcomes, bool), np.asarray(baseline, bool)
    if x.shape != b.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired outcomes need equal non-empty 1-D shapes, got {x.shape} and {b.shape}")
    diff = x.astype(np.float64) - b
    resampled = diff[np.random.RandomState(seed).randint(0, x.size, (num_boot, x.size))].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"delta": float(diff.mean()), "low": float(low), "high": float(high)}


def outcomes_of(kind: str, refused: Sequence[bool]) -> np.ndarray:
    """What a set scores: compliance (not refused) on benign sets, refusal on harmful sets."""
    if kind not in METRIC:
        raise ValueError(f"set kind {kind!r} is neither {BENIGN!r} nor {HARMFUL!r}")
    refused = np.asarray(refused, bool)
    return ~refused if kind == BENIGN else refused


def summarise(sets, refused: dict, responses: dict | None = None, num_boot: int = 2000,
              seed: int = 0) -> dict:
    """sets: objects with name, kind, path. refused: {(set name, method): bool [n]}; responses, if
    given, the texts under the same keys (to count responses that differ from the reference's)
    -> {set name: {kind, metric, path, reference, methods: {method: rate entry (+ delta, changed)}}}.

    The first method of each set is the reference for the deltas (the baseline when it ran).
    """
    results = {}
    for s in sets:
        methods = [m for (name, m) in refused if name == s.name]
        reference = outcomes_of(s.kind, refused[(s.name, methods[0])])
        per_method = {}
        for method in methods:
            outcomes = outcomes_of(s.kind, refused[(s.name, method)])
            entry = rate_interval(outcomes, num_boot, seed)
            if method != methods[0]:
                entry["delta"] = paired_delta(outcomes, reference, num_boot, seed)
                if responses is not None:
                    entry["changed"] = sum(a != b for a, b in zip(responses[(s.name, method)],
                                                                  responses[(s.name, methods[0])]))
            per_method[method] = entry
        results[s.name] = {"kind": s.kind, "metric": METRIC[s.kind], "path": s.path,
                           "reference": methods[0], "methods": per_method}
    return results


def markdown_table(results: dict) -> str:
    lines = ["| set | metric | method | rate [95% CI] | count | delta vs reference [95% CI] | responses changed |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for method, e in r["methods"].items():
            delta = e.get("delta")
            shown = (f"{100 * delta['delta']:+.1f} [{100 * delta['low']:+.1f}, {100 * delta['high']:+.1f}]"
                     if delta else "(reference)")
            changed = f"{e['changed']}/{e['n']}" if "changed" in e else ""
            lines.append(f"| {name} | {r['metric']} | {method} | {100 * e['rate']:.1f}% "
                         f"[{100 * e['low']:.1f}, {100 * e['high']:.1f}] | {e['count']}/{e['n']} | {shown} | "
                         f"{changed} |")
    return "\n".join(lines)
