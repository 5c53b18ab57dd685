"""Qwen3-14B with upstream's steering defaults (eta=0.3, 3 steps, top 20 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import hub_model_config


def get_config():
    return hub_model_config("Qwen/Qwen3-14B", eta=0.3, num_steps=3, top_n_layers=20)
