"""Experiment: window of steered calls, token floor, prompt gate (unsteered prompt energies)."""
import json, sys, glob, time
import numpy as np
import models, eds_jax
from eds_jax.training.pipeline import energy_floors
from eds_jax.judging.helpfulness import HelpfulnessJudge

run, tag = sys.argv[1], sys.argv[2]
settings = json.loads(sys.argv[3])
pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
saved = eds_jax.load_steering(f"{run}/ebms")
ebms, st = saved.ebms, saved.settings
z = np.load(glob.glob(f"{run}/collect/activations-*.npz")[0])
floors = energy_floors(ebms, z["activations"], z["labels"], [0.5, 0.8, 0.95])
v = np.load(f"{run}/val_prompt_acts.npz")
rows = [json.loads(l) for l in open(f"{run}/sweep_responses.jsonl")]
rows = [r for r in rows if r["setting"] == "unsteered"]
prompts = [r["prompt"] for r in rows]; base = [r["response"] for r in rows]
kinds = v["kinds"]
E = {l: np.asarray(ebms[l].energy(v["acts"][:, l])) for l in st.layers}
judge = HelpfulnessJudge.from_dict(saved.judge)
base_j = judge.judge(pre, prompts, base)
bo = np.array(base_j.outcomes)
def summary(outs):
    o = np.array(outs); b = kinds == "benign"; h = ~b
    rem_b = int(((bo == "refusal") & (o != "refusal") & b).sum()); rem_h = int(((bo == "refusal") & (o != "refusal") & h).sum())
    add_h = int(((bo != "refusal") & (o == "refusal") & h).sum())
    hs = np.flatnonzero(h)
    return (f"BH {np.mean(o[b]=='helpful'):.3f} BI {np.mean(o[b]=='incoherent'):.3f} HR {np.mean(o[h]=='refusal'):.3f} "
            f"HI {np.mean(o[h]=='incoherent'):.3f} removed B {rem_b}/{int(((bo=='refusal')&b).sum())} H {rem_h}/{int(((bo=='refusal')&h).sum())} added H {add_h}")
print("unsteered", summary(bo), flush=True)
for s in settings:
    t = time.time()
    layers = st.layers
    if s.get("gate"):
        q = s["gate"]; open_ = {l: E[l] > floors[q][l] for l in layers}
    else:
        open_ = {l: np.ones(len(prompts), bool) for l in layers}
    idx = np.flatnonzero(np.any([open_[l] for l in layers], 0))
    eta = {l: (s["f"] * st.hidden_norm[l] * open_[l][idx]).astype(np.float32) for l in layers}
    fl = None if s.get("floor") is None else {l: floors[s["floor"]][l] for l in layers}
    steer = eds_jax.Steering(ebms, eta=eta, num_steps=st.num_steps, energy_floor=fl, window=s.get("window"))
    out = eds_jax.generate_text(pre, [prompts[i] for i in idx], steering=steer, system=saved.system,
                                max_new_tokens=40, batch_size=32)
    resp = list(base)
    for i, r in zip(idx, out): resp[i] = r
    j = judge.judge(pre, prompts, resp)
    print(json.dumps(s), f"open {len(idx)}:", summary(j.outcomes), f"{time.time()-t:.0f}s", flush=True)
    with open(f"{run}/diag_{tag}_{len(open(f'{run}/diag_{tag}.log','a').name)}_{settings.index(s)}.jsonl", "w") as fh:
        for p, k, r, o in zip(prompts, kinds, resp, j.outcomes): fh.write(json.dumps({"prompt": p, "kind": k, "response": r, "outcome": o, "base": base[prompts.index(p)]}) + "\n")
