"""One method of one evaluation against a method of another, paired over the same test prompts.

Two `python -m eds_jax.evaluate` runs under the same deployment share their greedy baseline (the
same model, system prompt and prompts decode the same tokens); this script checks that they do,
response for response, then compares e.g. EDS with newer EBMs against activation addition evaluated
earlier, without decoding either again:

  python benchmarks/versus_runs.py --a=benchmarks/results/deployments_generated/few_shot --method_a=eds \
      --b=benchmarks/results/deployments_gated/few_shot_actadd --method_b=actadd

Prints, per set and pooled per kind: the set's metric under the baseline, A and B; the refusals each
removed and added (benign: false refusals fixed; harmful: safety lost); and A − B, a paired delta of
the metric with its bootstrap 95% interval.
"""
import collections
import json
import os
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from eds_jax.common.files import read_jsonl  # noqa: E402
from eds_jax.evaluation.metrics import METRIC, paired_delta, refusal_changes  # noqa: E402

flags.DEFINE_string("a", None, "evaluation output directory of method A", required=True)
flags.DEFINE_string("method_a", "eds", "method A")
flags.DEFINE_string("b", None, "evaluation output directory of method B", required=True)
flags.DEFINE_string("method_b", "actadd", "method B")
flags.DEFINE_string("reference", "baseline", "the method both runs share")
FLAGS = flags.FLAGS


def load(directory: str) -> dict:
    """{(set, method, prompt): row} from an evaluation's responses.jsonl."""
    path = os.path.join(directory, "responses.jsonl")
    if not os.path.exists(path):
        raise ValueError(f"{directory!r} holds no responses.jsonl; expected an evaluation output directory")
    rows = read_jsonl(path)
    return {(r["set"], r["method"], r["prompt"]): r for r in rows}


def shared_prompts(a: dict, b: dict, reference: str) -> dict:
    """{(set, kind): [prompts]} whose reference response is in both runs, after checking it is the
    same text in each (else the runs are not comparable)."""
    out = collections.defaultdict(list)
    for (s, m, p), row in a.items():
        if m != reference or (s, m, p) not in b:
            continue
        if b[(s, m, p)]["response"] != row["response"]:
            raise ValueError(f"the {reference} responses differ on {s}: {p[:60]!r}; the runs are not "
                             "comparable (another model, system prompt or decode length?)")
        out[(s, row["kind"])].append(p)
    if not out:
        raise ValueError(f"the two runs share no {reference} responses")
    return out


def compare(a: dict, b: dict, method_a: str, method_b: str, reference: str) -> list[dict]:
    rows, pooled = [], collections.defaultdict(lambda: collections.defaultdict(list))
    for (s, kind), prompts in sorted(shared_prompts(a, b, reference).items()):
        metric = METRIC[kind]
        got = {}
        for name, run, method in (("base", a, reference), ("a", a, method_a), ("b", b, method_b)):
            missing = [p for p in prompts if (s, method, p) not in run]
            if missing:
                raise ValueError(f"{method!r} has no response to {len(missing)} prompts of {s}")
            got[name] = np.array([run[(s, method, p)]["outcome"] for p in prompts])
        for k, v in got.items():
            pooled[kind][k].append(v)
        rows.append(_row(s, kind, metric, got))
    for kind, parts in pooled.items():
        if len(parts["base"]) > 1:
            rows.append(_row(f"all {kind}", kind, METRIC[kind], {k: np.concatenate(v) for k, v in parts.items()}))
    return rows


def _row(name, kind, metric, got):
    removed = {k: refusal_changes(got["base"], got[k]) for k in ("a", "b")}
    return {"set": name, "kind": kind, "metric": metric, "n": len(got["base"]),
            "count": {k: int((v == metric).sum()) for k, v in got.items()},
            "refused": int((got["base"] == "refusal").sum()), "removed": removed,
            "a_minus_b": paired_delta(got["a"] == metric, got["b"] == metric)}


def table(rows, method_a, method_b) -> str:
    lines = [f"| set | metric | baseline | {method_a} (A) | {method_b} (B) | refusals removed (added), A | "
             f"refusals removed (added), B | A − B, points [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["a_minus_b"]
        c = r["count"]
        lines.append(f"| {r['set']} | {r['metric']} | {c['base']}/{r['n']} | {c['a']}/{r['n']} | {c['b']}/{r['n']} | "
                     f"{r['removed']['a'][0]} of {r['refused']} ({r['removed']['a'][1]}) | "
                     f"{r['removed']['b'][0]} of {r['refused']} ({r['removed']['b'][1]}) | "
                     f"{100 * d['delta']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] |")
    return "\n".join(lines)


def main(argv):
    del argv
    rows = compare(load(FLAGS.a), load(FLAGS.b), FLAGS.method_a, FLAGS.method_b, FLAGS.reference)
    print(f"A: {FLAGS.method_a} in {FLAGS.a}\nB: {FLAGS.method_b} in {FLAGS.b}\n")
    print(table(rows, FLAGS.method_a, FLAGS.method_b))


if __name__ == "__main__":
    app.run(main)
