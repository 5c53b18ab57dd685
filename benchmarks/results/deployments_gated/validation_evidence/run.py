# Diagnostic run once on 2026-12-02 (see output.txt); reads runs/deployments_gate/NAME, which is not committed.
"""The paired evidence behind each deployment's chosen validation gain (sweep_responses.jsonl,
judged again with the judge saved with its EBMs)."""
import json, sys
import numpy as np
import models, eds_jax
from eds_jax.judging.helpfulness import HelpfulnessJudge, HELPFUL
from eds_jax.training.search import sign_test
pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
for name in sys.argv[1:]:
    wd = f"runs/deployments_gate/{name}"
    saved = eds_jax.load_steering(f"{wd}/ebms")
    chosen = saved.sweep["chosen"]
    rows = [json.loads(l) for l in open(f"{wd}/sweep_responses.jsonl")]
    by = {}
    for r in rows:
        if r["kind"] == "benign":
            by.setdefault(r["setting"], {})[r["prompt"]] = r["response"]
    if chosen == "unsteered":
        print(name, "kept unsteered"); continue
    prompts = [p for p in by["unsteered"] if p in by[chosen]]
    judge = HelpfulnessJudge.from_dict(saved.judge)
    a = judge.judge(pre, prompts, [by["unsteered"][p] for p in prompts], 16)
    b = judge.judge(pre, prompts, [by[chosen][p] for p in prompts], 16)
    was = np.asarray(a.outcomes) == HELPFUL; now = np.asarray(b.outcomes) == HELPFUL
    g, l = int((now & ~was).sum()), int((was & ~now).sum())
    print(f"{name}: {chosen}: {len(prompts)} benign validation prompts, helpful {was.sum()} -> {now.sum()}, "
          f"gained {g}, lost {l}, sign test p = {sign_test(g, l):.2g}", flush=True)
