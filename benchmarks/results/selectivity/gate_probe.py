"""Experiment: a linear read-out of the prompt's kind (benign / harmful) as the gate."""
import json, sys, glob, time
import numpy as np, jax, jax.numpy as jnp, optax
import models, eds_jax
from eds_jax.training.pipeline import energy_floors
from eds_jax.judging.helpfulness import HelpfulnessJudge
run, layer = sys.argv[1], int(sys.argv[2]); settings = json.loads(sys.argv[3])
z = np.load(glob.glob(f"{run}/collect/activations-*.npz")[0]); A = z["activations"]
R = [json.loads(l) for l in open(glob.glob(f"{run}/collect/responses-*.jsonl")[0])]
k = np.array([r["kind"] for r in R]); y = (k == "benign").astype(np.float32)
X = A[:, layer]; mu, sd = X.mean(0), X.std(0) + 1e-6; Xs = (X - mu) / sd
def loss(p): return jnp.mean(optax.sigmoid_binary_cross_entropy(Xs @ p[0] + p[1], y)) + 1e-2 * jnp.sum(p[0] ** 2)
p = (jnp.zeros(X.shape[1]), jnp.float32(0)); opt = optax.adam(1e-2); st = opt.init(p); g = jax.jit(jax.value_and_grad(loss))
for _ in range(300):
    l, gr = g(p); u, st = opt.update(gr, st); p = optax.apply_updates(p, u)
score_tr = np.asarray(Xs @ p[0] + p[1])
v = np.load(f"{run}/val_prompt_acts.npz"); kinds = v["kinds"]
score = np.asarray(((v["acts"][:, layer] - mu) / sd) @ p[0] + p[1])
pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
saved = eds_jax.load_steering(f"{run}/ebms"); ebms, sst = saved.ebms, saved.settings
floors = energy_floors(ebms, A, z["labels"], [0.5, 0.8, 0.95])
rows = [json.loads(l) for l in open(f"{run}/sweep_responses.jsonl")]; rows = [r for r in rows if r["setting"] == "unsteered"]
prompts = [r["prompt"] for r in rows]; base = [r["response"] for r in rows]
judge = HelpfulnessJudge.from_dict(saved.judge); bo = np.array(judge.judge(pre, prompts, base).outcomes)
def summary(o):
    o = np.array(o); b = kinds == "benign"; h = ~b
    rb = int(((bo == "refusal") & (o != "refusal") & b).sum()); rh = int(((bo == "refusal") & (o != "refusal") & h).sum())
    return (f"BH {np.mean(o[b]=='helpful'):.3f} BI {np.mean(o[b]=='incoherent'):.3f} HR {np.mean(o[h]=='refusal'):.3f} HI {np.mean(o[h]=='incoherent'):.3f} "
            f"removed B {rb} H {rh} added H {int(((bo != 'refusal') & (o == 'refusal') & h).sum())}")
print("unsteered", summary(bo), flush=True)
for s in settings:
    t = time.time()
    thr = np.quantile(score_tr[k == "harmful"], s["gq"])   # open above the gq-quantile of harmful training scores
    op = score > thr
    print(f"gate layer {layer} q{s['gq']}: open benign {int(op[kinds=='benign'].sum())}/{int((kinds=='benign').sum())} "
          f"harmful {int(op[kinds=='harmful'].sum())}/{int((kinds=='harmful').sum())} (BR {int(op[(kinds=='benign')&(bo=='refusal')].sum())}, HR {int(op[(kinds=='harmful')&(bo=='refusal')].sum())})")
    idx = np.flatnonzero(op)
    fl = None if s.get("floor") is None else {l: floors[s["floor"]][l] for l in sst.layers}
    steer = eds_jax.Steering(ebms, eta={l: s["f"] * sst.hidden_norm[l] for l in sst.layers}, num_steps=3, energy_floor=fl, window=s.get("window"))
    out = eds_jax.generate_text(pre, [prompts[i] for i in idx], steering=steer, system=saved.system, max_new_tokens=40, batch_size=32)
    resp = list(base)
    for i, r in zip(idx, out): resp[i] = r
    j = judge.judge(pre, prompts, resp)
    print(json.dumps(s), summary(j.outcomes), f"{time.time()-t:.0f}s", flush=True)
    with open(f"{run}/diag_gate_{layer}_{settings.index(s)}.jsonl", "w") as fh:
        for pr, kk, r, o, b0 in zip(prompts, kinds, resp, j.outcomes, base): fh.write(json.dumps({"prompt": pr, "kind": kk, "response": r, "outcome": o, "base": b0}) + "\n")
