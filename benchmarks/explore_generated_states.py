"""Exploration (session 12): EBMs trained on generated-token states and/or benign rows only,
searched as `train_ebm.py` would on the embedded default's collection. The pipeline now has the
generated-state variant as `config.collect.generated_states` (states taken inside the decode loop,
validation split by prompt); this script keeps the record of the exploration's raw results.

  python benchmarks/explore_generated_states.py VARIANT COLLECTION_DIR WORK_DIR   (K=8 by default)

COLLECTION_DIR: a default-config `WORKDIR/collect` (from `python train_ebm.py`). The generated-token
states come from a teacher-forced forward over prompt + the first K re-tokenised response tokens.
Caveat: train_layers splits rows, not prompts, so with generated states a prompt's rows can sit on
both sides of the EBMs' validation split (layer AUCs optimistic; the search's prompts are separate).

Variants: prompt_all (as shipped), gen_all (last prompt token + first K generated tokens),
prompt_benign (benign rows only: good = answered, bad = refused), gen_benign. Validation: the shared
config's larger validation sets (64 ORB-H + harmless; harmful val).
"""
import json, os, sys, time
import numpy as np
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import jax, jax.numpy as jnp
import models
from configs import smollm2_135m as default_cfg, smollm2_135m_shared as shared_cfg
from eds_jax.core.decoding import chat_prompts, left_pad, pad_to_bucket, bucket_length
from eds_jax.core.ebm import EBMSpec
from eds_jax.judging.refusal import get_judge
from eds_jax.training import collect as C, infonce, pipeline as P
from models.sharding import batch_sharding, pad_rows

VARIANTS = ("prompt_all", "gen_all", "prompt_benign", "gen_benign")
if len(sys.argv) != 4 or sys.argv[1] not in VARIANTS:
    sys.exit(f"usage: explore_generated_states.py VARIANT COLLECTION_DIR WORK_DIR, VARIANT one of {VARIANTS}; "
             f"got {sys.argv[1:]}")
variant, COLLECTION, WORK = sys.argv[1:4]
K = int(os.environ.get("K", 8))
out = os.path.join(WORK, variant)
os.makedirs(out, exist_ok=True)
cfg = default_cfg.get_config()
sh = shared_cfg.get_config()
cfg.sweep.benign = sh.sweep.benign
cfg.sweep.harmful = sh.sweep.harmful
t0 = time.time()
benign = C.read_sources(cfg.data.benign, cfg.data.seed)
harmful = C.read_sources(cfg.data.harmful, cfg.data.seed)
validation = P.validation_prompts(cfg, set(benign) | set(harmful))
pre = models.load_pretrained(P.resolve_model_source(cfg.model.source), dtype="float32")
data = C.collect(pre, benign, harmful, COLLECTION, cfg.collect.to_dict(),
                 get_judge(cfg.collect.judge))
print("counts", data.counts(), flush=True)

gen_path = os.path.join(WORK, f"gen_states_K{K}.npz")
if variant.startswith("gen") and not os.path.exists(gen_path):
    tok = pre.tokenizer
    texts = chat_prompts(tok, data.prompts, cfg.collect.system)
    p_ids = tok(texts, add_special_tokens=False)["input_ids"]
    r_ids = [tok(r, add_special_tokens=False)["input_ids"][:K] for r in data.responses]
    N, L, D = len(texts), pre.config.num_layers, pre.config.hidden_size
    gen = np.zeros((N, K, L, D), np.float16)
    valid = np.zeros((N, K), bool)
    order = np.argsort([len(a) + len(b) for a, b in zip(p_ids, r_ids)])
    for s in range(0, N, 32):
        rows = order[s:s + 32]
        seqs = [p_ids[i] + r_ids[i] for i in rows]
        ids, mask = left_pad(seqs, pre.pad_token_id)
        n = len(rows)
        ids, mask = pad_rows((ids, mask), 32)  # a short last batch reuses the full batches' compile
        split = models.split_shared_prefix(ids, mask)
        prefix = None
        if split is not None:
            prefix_ids, ids, mask = split
            prefix = models.prefill_prefix(pre, prefix_ids)
        ids, mask = pad_to_bucket(ids, mask, pre.pad_token_id, bucket_length(ids.shape[1]))
        o = models.forward(pre, ids, mask, output_hidden_states=True, output_logits=False, prefix=prefix)
        h = np.asarray(jnp.stack([x[:, -K:] for x in o.hidden_states[:L]], axis=2))  # [B, K, L, D]
        for j, i in enumerate(rows):
            m = len(r_ids[i])  # the last m positions are response tokens 0..m-1
            if m:
                gen[i, :m] = h[j, K - m:]
                valid[i, :m] = True
        print(f"states {s + n}/{N} {time.time() - t0:.0f}s", flush=True)
    np.savez(gen_path, gen=gen, valid=valid)

kinds = np.asarray(data.kinds)
acts, labels = data.activations, data.labels
keep = np.ones(len(labels), bool) if variant.endswith("_all") else kinds == "benign"
x, y = [acts[keep]], [labels[keep]]
if variant.startswith("gen"):
    g = np.load(gen_path)
    gen, valid = g["gen"], g["valid"]
    for k in range(K):
        rows = keep & valid[:, k]
        x.append(gen[rows, k].astype(np.float32)); y.append(labels[rows])
x = np.concatenate(x); y = np.concatenate(y)
print("training rows", x.shape, "good", int(y.sum()), "bad", int((1 - y).sum()), flush=True)
spec = EBMSpec.build(cfg.ebm.architecture, pre.config.hidden_size, cfg.ebm.hidden_dim,
                     tuple(cfg.ebm.hidden_dims), cfg.ebm.dropout_rate, cfg.ebm.use_layernorm)
tc = infonce.TrainConfig(cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate,
                         cfg.train.temperature, cfg.train.seed, cfg.train.select_by)
mesh = infonce.make_mesh()
layers = list(range(pre.config.num_layers))
res = infonce.train_layers(x, y, layers, spec, tc, cfg.train.val_fraction, mesh, out, checkpoint_every_s=1e9)
scores = res["metrics"]["auc"]
ranked = [int(layers[i]) for i in np.lexsort((res["metrics"]["loss"], -scores))]
print("ranked", ranked[:6], "auc", [round(float(scores[l]), 3) for l in ranked[:6]], flush=True)
layer_ebm = lambda l: res["trainer"].layer_ebm(res["params"], l)
gate = P.fit_gate(cfg, data)  # fitted on last-prompt-token states, as the pipeline does
t1 = time.time()
settings, judge, sweep = P.choose_steering(cfg, pre, ranked, layer_ebm, validation, workdir=out,
                                           sharding=batch_sharding(mesh), data=data, gate=gate)
from eds_jax.training import search
print(search.markdown_table(sweep["table"], sweep["chosen"]))
print("reason:", sweep["reason"])
print(f"search {time.time() - t1:.0f}s total {time.time() - t0:.0f}s")
json.dump({"table": sweep["table"], "chosen": sweep["chosen"], "reason": sweep["reason"], "ranked": ranked},
          open(f"{out}/sweep.json", "w"), default=str)
from eds_jax.core.saved import save_steering
save_steering(f"{out}/ebms", {l: layer_ebm(l) for l in settings.layers}, settings, system=cfg.collect.system,
              model={"source": pre.source, "family": pre.family, "hidden_size": int(pre.config.hidden_size),
                     "num_layers": int(pre.config.num_layers)}, judge=judge, sweep=sweep, training={},
              overwrite=True, gate=gate)
