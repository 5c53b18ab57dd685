"""Llama-2-7B-chat with upstream's steering defaults (eta=0.95, 12 steps, top 12 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import base_config


def get_config():
    c = base_config()
    c.model.source = "meta-llama/Llama-2-7b-chat-hf"
    c.model.dtype = "bfloat16"
    c.steer.eta = 0.95
    c.steer.num_steps = 12
    c.steer.top_n_layers = 12
    return c
