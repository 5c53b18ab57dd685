"""Llama-2-7B-chat with upstream's steering defaults (eta=0.95, 12 steps, top 12 layers).

The checkpoint is read from the local Hugging Face cache (or pass --config.model.source=DIR).
"""
from configs.common import hub_model_config


def get_config():
    return hub_model_config("meta-llama/Llama-2-7b-chat-hf", eta=0.95, num_steps=12, top_n_layers=12)
