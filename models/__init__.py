"""Flax ports of Llama (2, 3, 3.1, 3.2) and Qwen3, their checkpoint loaders, and `forward`."""
from models.checkpoint import CheckpointError
from models.config import ModelConfig, UnsupportedConfigError, from_hf_config
from models.prefix_cache import SharedPrefix, bucket_length, split_shared_prefix
from models.pretrained import (Pretrained, block_input_at_last, forward, last_token_logits, load_pretrained, next_token_logprobs,
                               prefill_prefix, prefix_intervention, prompt_positions,
                               read_config, read_header, smollm2_gguf_path)
from models.transformer import CausalLM, Intervention, TransformerOutput, init_kv_cache

__all__ = ["CausalLM", "CheckpointError", "Intervention", "ModelConfig", "Pretrained", "SharedPrefix",
           "TransformerOutput", "UnsupportedConfigError", "block_input_at_last", "bucket_length", "forward",
           "from_hf_config", "init_kv_cache", "last_token_logits", "load_pretrained", "next_token_logprobs",
           "prefill_prefix", "prefix_intervention", "prompt_positions", "read_config", "read_header", "smollm2_gguf_path",
           "split_shared_prefix"]
