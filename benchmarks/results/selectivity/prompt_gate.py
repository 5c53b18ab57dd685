"""Experiment: gate decided once at the prompt's last token (unsteered), per layer."""
import json, sys, glob, time
import numpy as np
import models, eds_jax
from eds_jax.training.pipeline import energy_floors

run = sys.argv[1]
settings = [(q, rule, f) for q, rule, f in [(0.95, "layer", 0.1), (0.95, "layer", 0.2), (0.95, "layer", 0.316),
                                            (0.95, "L21", 0.2), (0.8, "all", 0.2)]]
pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
saved = eds_jax.load_steering(f"{run}/ebms")
ebms, st = saved.ebms, saved.settings
z = np.load(glob.glob(f"{run}/collect/activations-*.npz")[0])
floors = energy_floors(ebms, z["activations"], z["labels"], [0.8, 0.95])
v = np.load(f"{run}/val_prompt_acts.npz")
rows = [json.loads(l) for l in open(f"{run}/sweep_responses.jsonl")]
rows = [r for r in rows if r["setting"] == "unsteered"]
prompts = [r["prompt"] for r in rows]; base = [r["response"] for r in rows]
kinds = v["kinds"]
E = {l: np.asarray(ebms[l].energy(v["acts"][:, l])) for l in st.layers}
from eds_jax.judging.helpfulness import HelpfulnessJudge
judge = HelpfulnessJudge.from_dict(saved.judge)
base_j = judge.judge(pre, prompts, base)
def summary(outs):
    o = np.array(outs); b = kinds == "benign"; h = ~b
    bo = np.array(base_j.outcomes)
    rem_b = int(((bo == "refusal") & (o != "refusal") & b).sum()); rem_h = int(((bo == "refusal") & (o != "refusal") & h).sum())
    add_h = int(((bo != "refusal") & (o == "refusal") & h).sum())
    xs = np.array([i >= 39 for i in range(len(o))])  # harmful rows: first 39 harmful_val, then 40 xstest? (checked below)
    return (f"BH {np.mean(o[b]=='helpful'):.3f} BI {np.mean(o[b]=='incoherent'):.3f} HR {np.mean(o[h]=='refusal'):.3f} "
            f"removed B {rem_b} H {rem_h} added H {add_h}")
print("unsteered", summary(base_j.outcomes))
for q, rule, f in settings:
    t = time.time()
    if rule == "layer":
        open_ = {l: E[l] > floors[q][l] for l in st.layers}
    elif rule == "all":
        a = np.all([E[l] > floors[q][l] for l in st.layers], 0); open_ = {l: a for l in st.layers}
    else:
        a = E[21] > floors[q][21]; open_ = {l: a for l in st.layers}
    any_open = np.flatnonzero(np.any([open_[l] for l in st.layers], 0))
    eta = {l: (f * st.hidden_norm[l] * open_[l][any_open]).astype(np.float32) for l in st.layers}
    steer = eds_jax.Steering(ebms, eta=eta, num_steps=st.num_steps)
    out = eds_jax.generate_text(pre, [prompts[i] for i in any_open], steering=steer, system=saved.system,
                                max_new_tokens=40, batch_size=32)
    resp = list(base); 
    for i, r in zip(any_open, out): resp[i] = r
    j = judge.judge(pre, prompts, resp)
    print(f"q{q} {rule} f{f} open {len(any_open)}:", summary(j.outcomes), f"{time.time()-t:.0f}s", flush=True)
    with open(f"{run}/gate_{q}_{rule}_{f}.jsonl", "w") as fh:
        for p, k, r, o in zip(prompts, kinds, resp, j.outcomes): fh.write(json.dumps({"prompt": p, "kind": k, "response": r, "outcome": o}) + "\n")
