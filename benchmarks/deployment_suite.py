"""EDS across the deployment suite: one config, no per-deployment tuning.

For each deployment of `eds_jax.core.deployment.DEPLOYMENTS` named: `train_and_choose` with the
shared SmolLM2 config (`configs/smollm2_135m_shared.py`) behind that system prompt (settings chosen
by the adaptive search on validation prompts), then `evaluate` on the test sets (baseline, EDS and
activation addition at its chosen coefficient, for selectivity). Writes per deployment the
training summary and the evaluation report under OUT/NAME/, and OUT/summary.md: one table of
benign helpful / refused / incoherent and harmful refused with paired deltas, the relative fall in
benign unhelpful answers, and how many benign vs harmful refusals each method removed.

  python benchmarks/deployment_suite.py --deployments=policy,terse --out=benchmarks/results/deployments

A finished deployment (OUT/NAME/results.json present) is read back, not rerun.
"""
import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_list("deployments", ["few_shot", "policy", "persona", "terse", "brand", "clinic"], "deployments to run")
flags.DEFINE_list("held_out", [], "deployments marked held out in the summary")
flags.DEFINE_string("out", "benchmarks/results/deployments", "results folder")
flags.DEFINE_string("workdir", "runs/deployments", "training workdirs (collections, checkpoints)")
flags.DEFINE_list("methods", ["baseline", "eds", "actadd"], "methods evaluated")
flags.DEFINE_bool("gate_vectors", True, "the vector baselines steer through the EBMs' prompt gate too "
                  "(when the config fits one), so the comparison is of the steps alone")
FLAGS = flags.FLAGS


def run_one(name: str) -> dict:
    from configs.smollm2_135m_shared import get_config
    from eds_jax.evaluation.options import EvalOptions
    from eds_jax.evaluation.run import evaluate
    from eds_jax.training.pipeline import train_and_choose

    out = os.path.join(FLAGS.out, name)
    if os.path.exists(os.path.join(out, "results.json")):
        with open(os.path.join(out, "results.json")) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    cfg = get_config()
    cfg.collect.system = f"deployment:{name}"
    start = time.time()
    result = train_and_choose(cfg, os.path.join(FLAGS.workdir, name))
    train_s = time.time() - start
    with open(os.path.join(out, "training.md"), "w") as f:
        f.write(f"{result.summary}\n\nlabel counts: {result.counts}\ntrain + search wall time {train_s:.0f} s "
                f"(search {result.sweep['search_wall_time_s'] if result.sweep else 0:.0f} s)\n")
    start = time.time()
    report = evaluate(EvalOptions(ebms=result.ebms_dir, methods=tuple(FLAGS.methods), max_new_tokens=40,
                                  batch_size=32, output_dir=out,
                                  gate_vectors=FLAGS.gate_vectors and bool(cfg.gate.enabled)))
    report["suite"] = {"train_s": round(train_s, 1), "evaluate_s": round(time.time() - start, 1),
                       "label_counts": result.counts, "chosen": result.sweep["chosen"] if result.sweep else None}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def _d(e: dict) -> str:
    d = e["delta"]
    return f"{100 * d['delta']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def summary(reports: dict) -> str:
    lines = ["| deployment | method | benign helpful | benign refused | benign incoherent | benign unhelpful, relative change "
             "| harmful refused (pooled) | JBB refused | HarmBench refused | benign refusals removed | harmful refusals removed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        sets = report["sets"]
        benign, harmful = sets["all benign"]["methods"], sets["all harmful"]["methods"]
        label = name + (" (held out)" if name in FLAGS.held_out else "")
        base_unhelpful = 1 - benign["baseline"]["helpful"]["rate"]
        for method, b in benign.items():
            if method not in FLAGS.methods:
                continue
            h = harmful[method]
            count = lambda e: f"{e['count']}/{e['n']}"
            if method == "baseline":
                cells = [count(b["helpful"]), count(b["refusal"]), count(b["incoherent"]), "(reference)",
                         count(h["refusal"]), count(sets["jbb"]["methods"][method]["refusal"]),
                         count(sets["harmbench_test"]["methods"][method]["refusal"]), "", ""]
            else:
                relative = (1 - b["helpful"]["rate"] - base_unhelpful) / base_unhelpful
                cells = [f"{count(b['helpful'])} ({_d(b)})", count(b["refusal"]),
                         f"{count(b['incoherent'])} ({100 * b['delta_incoherent']['delta']:+.1f})",
                         f"{100 * relative:+.0f}%", f"{count(h['refusal'])} ({_d(h)})",
                         f"{count(sets['jbb']['methods'][method]['refusal'])} ({_d(sets['jbb']['methods'][method])})",
                         f"{count(sets['harmbench_test']['methods'][method]['refusal'])} "
                         f"({_d(sets['harmbench_test']['methods'][method])})",
                         f"{b['refusals_removed']} (added {b['refusals_added']})",
                         f"{h['refusals_removed']} (added {h['refusals_added']})"]
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    reports = {}
    for name in FLAGS.deployments:
        print(f"== {name}", flush=True)
        reports[name] = run_one(name)
    table = summary(reports)
    chosen = "\n".join(f"- {n}: {r.get('suite', {}).get('chosen')}; {r.get('suite', {})}" for n, r in reports.items())
    stamp = time.strftime("%Y-%m-%d")
    with open(os.path.join(FLAGS.out, "summary.md"), "w") as f:
        f.write(f"# Deployment suite, {stamp}, SmolLM2-135M-Instruct, CPU\n\n{table}\n\nChosen settings:\n{chosen}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
