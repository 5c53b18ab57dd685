"""Qwen3-1.7B with upstream's steering defaults (eta=0.95, 10 steps, top 3 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import base_config


def get_config():
    c = base_config()
    c.model.source = "Qwen/Qwen3-1.7B"
    c.model.dtype = "bfloat16"
    c.steer.eta = 0.95
    c.steer.num_steps = 10
    c.steer.top_n_layers = 3
    return c
