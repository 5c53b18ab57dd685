"""Llama-3.1-8B-Instruct with upstream's steering defaults (eta=0.1, 3 steps, top 15 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import base_config


def get_config():
    c = base_config()
    c.model.source = "meta-llama/Llama-3.1-8B-Instruct"
    c.model.dtype = "bfloat16"
    c.steer.eta = 0.1
    c.steer.num_steps = 3
    c.steer.top_n_layers = 15
    return c
