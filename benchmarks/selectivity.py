"""Where selectivity can come from: the EBMs' energy vs a read-out of the prompt's kind.

For a finished training workdir (train_ebm.py's WORKDIR, with its sweep), on the validation
prompts the settings were searched on, grouped by the unsteered answer (benign refused = a false
refusal, harmful refused = a true one, ...):
- each steered layer's energy at the last prompt token, unsteered: its median per group, the AUC
  of false over true refusals, and how many of each group sit above the energy floors;
- the cosine between the unit energy gradients at false- and at true-refusal states;
- the prompt gate (`eds_jax.training.gate.fit_prompt_gate`, refitted on the workdir's collection):
  its held-out AUC on training prompts and how many prompts of each group it opens.

  python benchmarks/selectivity.py --workdir=runs/smollm2_shared --out=benchmarks/results/selectivity/few_shot.md
"""
import glob
import json
import os
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("workdir", None, "train_ebm.py workdir (collect/, ebms/, sweep_responses.jsonl)")
flags.DEFINE_string("out", None, "markdown file to write (printed too)")
flags.DEFINE_float("harmful_quantile", 0.99, "the gate's threshold quantile")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import models
    import eds_jax
    from eds_jax.common.files import read_jsonl
    from eds_jax.judging.refusal import is_refusal
    from eds_jax.training.collect import last_token_activations
    from eds_jax.training.gate import auc, fit_prompt_gate
    from eds_jax.training.pipeline import energy_floors

    work = FLAGS.workdir
    saved = eds_jax.load_steering(os.path.join(work, "ebms"), gate=False)
    collected = np.load(glob.glob(os.path.join(work, "collect", "activations-*.npz"))[0])
    responses = read_jsonl(glob.glob(os.path.join(work, "collect", "responses-*.jsonl"))[0])
    rows = read_jsonl(os.path.join(work, "sweep_responses.jsonl"))
    rows = [r for r in rows if r["setting"] == "unsteered"]
    prompts = [r["prompt"] for r in rows]
    kinds = np.array([r["kind"] for r in rows])
    refused = np.array([is_refusal(r["response"]) for r in rows])
    groups = {"benign refused (false refusal)": (kinds == "benign") & refused,
              "benign answered": (kinds == "benign") & ~refused,
              "harmful refused (true refusal)": (kinds == "harmful") & refused,
              "harmful answered": (kinds == "harmful") & ~refused}
    false_r, true_r = groups["benign refused (false refusal)"], groups["harmful refused (true refusal)"]
    pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
    acts = last_token_activations(pre, prompts, saved.system, 32, progress=False)
    layers = list(saved.settings.layers)
    floors = energy_floors(saved.ebms, collected["activations"], collected["labels"], [0.5, 0.8, 0.95])
    lines = [f"# Selectivity at the last prompt token, {time.strftime('%Y-%m-%d')}, {work}",
             "", f"Validation prompts (the settings search's), grouped by the unsteered answer: "
             + ", ".join(f"{g} {int(m.sum())}" for g, m in groups.items()) + ".", "",
             "## The EBMs' energy (unsteered state)", "",
             "| layer | median energy per group | AUC false > true refusal | mean cos(unit grads), false x true "
             "| above q0.5 / q0.8 / q0.95 floor: false refusals | true refusals |",
             "|---|---|---|---|---|---|"]
    for layer in layers:
        ebm = saved.ebms[layer]
        energy = np.asarray(ebm.energy(acts[:, layer]))
        grads = np.asarray(jax.vmap(jax.grad(lambda h: ebm.energy(h[None])[0]))(jnp.asarray(acts[:, layer])))
        unit = grads / (np.linalg.norm(grads, axis=-1, keepdims=True) + 1e-8)
        cos = float(unit[false_r].mean(0) @ unit[true_r].mean(0))  # mean over false x true pairs
        above = lambda m: " / ".join(str(int((energy[m] > floors[q][layer]).sum())) for q in (0.5, 0.8, 0.95))
        lines.append(f"| {layer} | " + ", ".join(f"{np.median(energy[m]):+.2f}" for m in groups.values())
                     + f" | {auc(energy[false_r], energy[true_r]):.3f} | {cos:.3f} | {above(false_r)} of "
                       f"{int(false_r.sum())} | {above(true_r)} of {int(true_r.sum())} |")
    started = time.time()
    gate = fit_prompt_gate(collected["activations"], [r["kind"] for r in responses], FLAGS.harmful_quantile)
    fit_s = time.time() - started
    score = np.asarray(gate.scores(acts[:, gate.layer]))
    opened = score > float(gate.threshold)
    lines += ["", f"## The prompt gate (quantile {FLAGS.harmful_quantile}, fitted in {fit_s:.0f} s)", "",
              f"Block {gate.layer}, held-out AUC benign > harmful on the training prompts "
              f"{gate.info['held_out_auc']} (by block: {gate.info['held_out_auc_by_layer']}); opens "
              f"{gate.info['held_out_open']} of held-out training prompts.", "",
              f"On the validation prompts: AUC false > true refusal {auc(score[false_r], score[true_r]):.3f}; opens "
              + ", ".join(f"{g} {int(opened[m].sum())}/{int(m.sum())}" for g, m in groups.items()) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if FLAGS.out:
        os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
