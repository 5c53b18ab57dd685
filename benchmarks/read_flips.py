"""Print the responses a method changed, for reading: a seeded sample of the prompts whose outcome
moved between the reference method and `--method` in an evaluation's responses.jsonl.

  python benchmarks/read_flips.py runs/eval_full --method=eds --n=5 [--reference=baseline]

Per kind of set: benign refusals that became helpful (false refusals fixed) or incoherent, harmful
refusals that became answers (safety lost), with both responses side by side; counts first.
"""
import collections
import json
import os
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a clone without installing the package

flags.DEFINE_string("method", "eds", "the method whose changes are read")
flags.DEFINE_string("reference", "baseline", "the method it is compared with")
flags.DEFINE_integer("n", 5, "responses shown per kind of flip")
flags.DEFINE_integer("seed", 0, "sample seed")
flags.DEFINE_integer("width", 300, "characters shown per response")
FLAGS = flags.FLAGS


def flips(rows, method, reference):
    """{(kind, before, after): [(set, prompt, reference response, method response)]}."""
    by_key = {(r["set"], r["method"], r["prompt"]): r for r in rows}
    moved = collections.defaultdict(list)
    for r in rows:
        if r["method"] != method:
            continue
        ref = by_key.get((r["set"], reference, r["prompt"]))
        if ref is not None and ref["outcome"] != r["outcome"]:
            moved[(r["kind"], ref["outcome"], r["outcome"])].append((r["set"], r["prompt"], ref["response"],
                                                                     r["response"]))
    return moved


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("give one evaluation output directory")
    from eds_jax.common.files import read_jsonl
    rows = read_jsonl(os.path.join(argv[1], "responses.jsonl"))
    moved = flips(rows, FLAGS.method, FLAGS.reference)
    for key in sorted(moved):
        print(f"{key[0]}: {key[1]} -> {key[2]}: {len(moved[key])}")
    rng = np.random.RandomState(FLAGS.seed)
    cut = lambda text: " ".join(text.split())[:FLAGS.width]
    for key in sorted(moved):
        items = moved[key]
        print(f"\n## {key[0]}: {key[1]} -> {key[2]} ({len(items)}; {min(FLAGS.n, len(items))} shown)")
        for i in sorted(rng.choice(len(items), min(FLAGS.n, len(items)), replace=False)):
            name, prompt, before, after = items[i]
            print(f"\n[{name}] {cut(prompt)}\n  {FLAGS.reference}: {cut(before)}\n  {FLAGS.method}: {cut(after)}")


if __name__ == "__main__":
    sys.exit(app.run(main))
