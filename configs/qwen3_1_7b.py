"""Qwen3-1.7B with upstream's steering defaults (eta=0.95, 10 steps, top 3 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import hub_model_config


def get_config():
    return hub_model_config("Qwen/Qwen3-1.7B", eta=0.95, num_steps=10, top_n_layers=3)
