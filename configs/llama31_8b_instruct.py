"""Llama-3.1-8B-Instruct with upstream's steering defaults (eta=0.1, 3 steps, top 15 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import hub_model_config


def get_config():
    return hub_model_config("meta-llama/Llama-3.1-8B-Instruct", eta=0.1, num_steps=3, top_n_layers=15)
