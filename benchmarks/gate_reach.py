"""How far the prompt gate reaches on the test sets: of the prompts an evaluation answered unsteered,
how many of each kind and outcome (benign refused = a false refusal, harmful refused = a true one)
the saved gate opens. Separates "the gate kept steering away" from "the steps did not move the
answer" when EDS removes few refusals.

  python benchmarks/gate_reach.py --pair=clinic:runs/deployments_gate/clinic/ebms:runs/suite_gate/clinic
"""
import collections
import json
import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_multi_string("pair", [], "NAME:EBMS_DIR:EVAL_DIR (EVAL_DIR holds the evaluation's responses.jsonl)")
flags.DEFINE_integer("batch_size", 32, "prompts per forward pass")
FLAGS = flags.FLAGS


def gate_reach(pre, saved, rows: list[dict], batch_size: int) -> dict:
    """{"KIND OUTCOME": [opened, n]} over the baseline rows of benign and harmful sets."""
    from eds_jax.training.collect import last_token_activations

    base = [r for r in rows if r["method"] == "baseline" and r["kind"] in ("benign", "harmful")]
    states = last_token_activations(pre, [r["prompt"] for r in base], saved.system, batch_size,
                                    progress=False)
    opened = saved.gate.opens(states[:, saved.gate.layer])
    counts = collections.defaultdict(lambda: [0, 0])
    for row, is_open in zip(base, opened):
        key = f"{row['kind']} {row['outcome']}"
        counts[key][0] += int(is_open)
        counts[key][1] += 1
    return dict(sorted(counts.items()))


def read_pairs(pairs: list[str]) -> list[tuple[str, object, list[dict]]]:
    """(name, saved steering, evaluation rows) per NAME:EBMS_DIR:EVAL_DIR, all read before the
    model loads, so a bad pair fails at once."""
    import eds_jax
    from eds_jax.common.files import read_jsonl

    if not pairs:
        raise app.UsageError("give at least one --pair=NAME:EBMS_DIR:EVAL_DIR")
    read = []
    for pair in pairs:
        parts = pair.split(":")
        if len(parts) != 3 or not all(parts):
            raise app.UsageError(f"--pair={pair!r}: expected NAME:EBMS_DIR:EVAL_DIR")
        name, ebms, eval_dir = parts
        saved = eds_jax.load_steering(ebms)
        if saved.gate is None:
            raise app.UsageError(f"{ebms} holds no prompt gate")
        read.append((name, saved, read_jsonl(os.path.join(eval_dir, "responses.jsonl"))))
    return read


def run():
    import models

    pairs = read_pairs(FLAGS.pair)
    pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
    for name, saved, rows in pairs:
        reach = gate_reach(pre, saved, rows, FLAGS.batch_size)
        print(f"{name}: gate opens " + ", ".join(f"{k} {o}/{n}" for k, (o, n) in reach.items()), flush=True)


if __name__ == "__main__":
    from eds_jax.cli import absl_main
    app.run(absl_main(run))
