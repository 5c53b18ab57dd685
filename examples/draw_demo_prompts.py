"""Write `examples/prompts.jsonl`: the Quick start's demo prompts, a seeded random sample of the test
sets the evaluation reports (`eds_jax.evaluate`'s default benign and harmful sets), so the demo
shows what those sets measure and no prompt in it was picked by how steering answers it.

  python examples/draw_demo_prompts.py            # 16 benign, then 6 harmful, seed 0

Benign prompts are drawn from all of each benign set. Harmful prompts are drawn among those the
default deployment refuses unsteered (the baseline rows of an evaluation's `responses.jsonl`,
`--refused_in`): SmolLM2 answers most harmful prompts even behind the over-cautious system prompt
(206 of 259 in the shipped evaluation), and steering cannot be shown keeping a refusal the model
never made. The unsteered outcome does not depend on the EBMs, so this picks nothing by its
steered answer. Each set gives a share of the sample proportional to its size (largest
remainders), drawn with `numpy.random.RandomState(seed)`; benign prompts come first, then harmful
ones, in set order.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

flags.DEFINE_integer("benign", 16, "benign prompts, shared among the benign test sets")
flags.DEFINE_integer("harmful", 6, "harmful prompts, shared among the harmful test sets")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("refused_in", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks/results/default_test/shipped/responses.jsonl"),
    "an evaluation's responses.jsonl under the default deployment: harmful prompts are drawn among "
    "those its baseline refused ('' draws from all)")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts.jsonl"),
                    "where to write one JSON object per prompt: instruction, set")
FLAGS = flags.FLAGS


def proportional(sizes: list[int], n: int) -> list[int]:
    """`n` split over sets of `sizes` in proportion, by largest remainders."""
    if not 0 < n <= sum(sizes):
        raise ValueError(f"cannot draw {n} prompts from sets of sizes {sizes}")
    exact = np.asarray(sizes, np.float64) * n / sum(sizes)
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[:n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def draw(sets: dict[str, list[str]], n: int, rng: np.random.RandomState) -> list[dict]:
    """`n` rows {"instruction", "set"} from the named `sets`, in set order, then file order."""
    picked = []
    for (name, prompts), count in zip(sets.items(), proportional([len(s) for s in sets.values()], n)):
        picked += [{"instruction": prompts[i], "set": name}
                   for i in sorted(rng.choice(len(prompts), count, replace=False))]
    return picked


def main(argv):
    del argv
    from eds_jax.common.files import write_jsonl
    from eds_jax.datasets.prompt_files import load_prompts
    from eds_jax.evaluation.options import EvalOptions

    options = EvalOptions()
    refused = None
    if FLAGS.refused_in:
        with open(FLAGS.refused_in) as f:
            evaluated = [json.loads(line) for line in f if line.strip()]
        refused = {(r["set"], r["prompt"]) for r in evaluated if r["method"] == "baseline"
                   and r["kind"] == "harmful" and r["outcome"] == "refusal"}
        if not refused:
            raise ValueError(f"--refused_in={FLAGS.refused_in}: no harmful baseline refusals in it")
    rng = np.random.RandomState(FLAGS.seed)
    rows = []
    for specs, n, kind in ((options.benign_sets, FLAGS.benign, "benign"),
                           (options.harmful_sets, FLAGS.harmful, "harmful")):
        sets = {name: load_prompts(path) for name, path in (spec.split("=", 1) for spec in specs)}
        if kind == "harmful" and refused is not None:
            sets = {name: [p for p in prompts if (name, p) in refused] for name, prompts in sets.items()}
            missing = [name for name, prompts in sets.items() if not prompts]
            if missing:
                raise ValueError(f"--refused_in={FLAGS.refused_in} has no baseline refusal in the "
                                 f"harmful sets {missing}; expected an evaluation of those sets")
        rows += draw(sets, n, rng)
    write_jsonl(FLAGS.output, rows)
    print(f"wrote {len(rows)} prompts to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
