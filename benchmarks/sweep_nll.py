"""Coherence as a number, not a count: each setting of a finished search, its benign answers'
negative log-likelihood under the plain model (nats/token, as the judge's fluency check reads it).

  python benchmarks/sweep_nll.py runs/deployments_generated/few_shot

Reads WORKDIR/sweep_responses.jsonl (every answer the search decoded) and WORKDIR/ebms (the judge).
Per setting: its benign answers judged incoherent (the 0/1 count the rule constrains), the mean NLL
of its non-refusal benign answers, and the paired shift: the mean over benign prompts answered
(not refused) both unsteered and under the setting of NLL(setting) - NLL(unsteered), with a
bootstrap 95% interval. A measure for a coherence constraint less noisy than a count on 40-80
prompts; nothing here changes a choice.
"""
import collections
import json
import os
import sys

import numpy as np
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a clone without installing the package

FLAGS = flags.FLAGS


def paired_shift(before: dict, after: dict, seed: int = 0, draws: int = 2000):
    """(mean shift, low, high, n) over the prompts both dicts score: after - before, with the
    evaluation's paired-bootstrap 95% interval (`metrics.paired_mean_delta`)."""
    from eds_jax.evaluation.metrics import paired_mean_delta
    common = sorted(set(before) & set(after))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    d = paired_mean_delta([after[p] for p in common], [before[p] for p in common], draws, seed)
    return d["delta"], d["low"], d["high"], len(common)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 2:
        raise app.UsageError("give one train_ebm.py workdir")
    import models
    from eds_jax.core.saved import read_metadata
    from eds_jax.judging.helpfulness import HelpfulnessJudge, answer_nll
    from eds_jax.training.search import UNSTEERED
    workdir = argv[1]
    judge = HelpfulnessJudge(**read_metadata(os.path.join(workdir, "ebms"))["judge"])
    by_setting = collections.defaultdict(dict)
    with open(os.path.join(workdir, "sweep_responses.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["kind"] == "benign":
                by_setting[r["setting"]][r["prompt"]] = r["response"]
    pairs = sorted({(p, t) for answers in by_setting.values() for p, t in answers.items()})
    pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
    scores = answer_nll(pre, [p for p, _ in pairs], [t for _, t in pairs], judge.refusal,
                        FLAGS.batch_size, progress=True)
    nll = dict(zip(pairs, scores))
    base = {p: nll[(p, t)] for p, t in by_setting[UNSTEERED].items() if np.isfinite(nll[(p, t)])}
    if FLAGS.save:  # every benign answer's NLL per setting (null for refusals), for replays
        with open(FLAGS.save, "w") as f:
            json.dump({s: {p: (nll[(p, t)] if np.isfinite(nll[(p, t)]) else None)
                           for p, t in answers.items()} for s, answers in by_setting.items()}, f)
    print(f"{workdir}: fluency threshold {judge.fluency_threshold:.3f} nats/token\n")
    print("| setting | benign answers | incoherent | mean NLL of answers | paired NLL shift [95% CI] (n) |")
    print("|---|---|---|---|---|")
    for setting, answers in by_setting.items():
        texts = list(answers.items())
        outcomes = judge.judge(None, [p for p, _ in texts], [t for _, t in texts],
                               nll=np.array([nll[(p, t)] for p, t in texts]))
        scored = {p: nll[(p, t)] for p, t in texts if np.isfinite(nll[(p, t)])}
        mean, low, high, n = paired_shift(base, scored)
        incoherent = sum(o == "incoherent" for o in outcomes.outcomes)
        print(f"| {setting} | {len(texts)} | {incoherent} | {np.mean(list(scored.values())):.3f} | "
              f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] ({n}) |")


if __name__ == "__main__":
    flags.DEFINE_integer("batch_size", 32, "answers scored per batch")
    flags.DEFINE_string("save", "", "also write {setting: {prompt: NLL}} of the benign answers here")
    app.run(main)
