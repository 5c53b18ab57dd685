"""Qwen3-14B with upstream's steering defaults (eta=0.3, 3 steps, top 20 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import base_config


def get_config():
    c = base_config()
    c.model.source = "Qwen/Qwen3-14B"
    c.model.dtype = "bfloat16"
    c.steer.eta = 0.3
    c.steer.num_steps = 3
    c.steer.top_n_layers = 20
    return c
