"""A rerun's EDS test responses against a suite deployment's saved baseline and EDS, paired by prompt:
  python benchmarks/results/group_margin/compare.py SUITE/responses.jsonl RERUN/responses.jsonl [LABEL]
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from eds_jax.evaluation.metrics import paired_delta

def load(path):
    rows = [json.loads(l) for l in open(path)]
    return rows

old = load(sys.argv[1])  # suite responses.jsonl (baseline + eds)
new = load(sys.argv[2])  # rerun responses.jsonl (eds)
label = sys.argv[3] if len(sys.argv) > 3 else "new eds"
def table(rows, method):
    return {(r["set"], r["prompt"]): r["outcome"] for r in rows if r["method"] == method}
base, eds_old, eds_new = table(old, "baseline"), table(old, "eds"), table(new, "eds")
kinds = {(r["set"], r["prompt"]): r["kind"] for r in old}
for kind in ("benign", "harmful"):
    keys = sorted(k for k in base if kinds[k] == kind and k in eds_new and k in eds_old)
    print(f"== {kind}: {len(keys)} prompts")
    for name, t in (("baseline", base), ("eds (saved)", eds_old), (label, eds_new)):
        o = np.array([t[k] for k in keys])
        line = f"  {name:12} helpful {np.sum(o=='helpful')} refused {np.sum(o=='refusal')} incoherent {np.sum(o=='incoherent')}"
        if kind == "benign" and name != "baseline":
            b = np.array([base[k] for k in keys])
            d = paired_delta(o == "helpful", b == "helpful")
            rel = (np.mean(o != "helpful") - np.mean(b != "helpful")) / np.mean(b != "helpful")
            di = paired_delta(o == "incoherent", b == "incoherent")
            line += f"; helpful {100*d['delta']:+.1f} [{100*d['low']:+.1f}, {100*d['high']:+.1f}], unhelpful {100*rel:+.0f}%, incoherent {100*di['delta']:+.1f} [{100*di['low']:+.1f}, {100*di['high']:+.1f}]"
        if kind == "harmful":
            for s in sorted({k[0] for k in keys}):
                ks = [k for k in keys if k[0] == s]
                line += f"; {s} refused {sum(t[k]=='refusal' for k in ks)}/{len(ks)}"
        print(line)
