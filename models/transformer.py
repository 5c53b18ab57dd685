"""The decoder-only transformer shared by Llama (2, 3, 3.1, 3.2) and Qwen3.

The two families differ only in config switches (Qwen3's q/k norm, explicit head_dim, biases), so
one module serves both. An *intervention* may rewrite the residual stream before chosen blocks; the
blocks never learn what it does.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import ModelConfig
from models.layers import DecoderBlock, RMSNorm


class Intervention(Protocol):
    """Rewrites the hidden state entering block `layer`.

    `layers` is static (a tuple of block indices). The call gets the block's input [B, T, D] and
    returns the new input plus an auxiliary array (or None) that the forward pass hands back in
    layer order. It is plain JAX, so it may contain `jax.grad`.

    Optionally, `prefix_intervention()` says what applies while a prompt prefix shared by the
    whole batch is computed once (`models.prefill_prefix`): None for an intervention that acts only
    on the newest position, itself for one that acts on every position. Without it, batches are
    prefilled whole.
    """
    layers: tuple[int, ...]

    def __call__(self, layer: int, hidden: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
        ...


KVCache = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (k, v), each [B, Hkv, S, Dh]


class TransformerOutput(NamedTuple):
    logits: Optional[jax.Array]  # [B, T or 1, V] float32
    hidden_states: Optional[tuple[jax.Array, ...]]  # L+1 x [B, T, D]; [i] enters block i
    kv_cache: KVCache
    intervention_aux: tuple  # one entry per intervened layer, in layer order


def init_kv_cache(config: ModelConfig, batch: int, length: int, dtype) -> KVCache:
    shape = (batch, config.num_kv_heads, length, config.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))


class CausalLM(nn.Module):
    config: ModelConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, positions, kv_cache: KVCache, cache_index, kv_mask,
                 intervention: Optional[Intervention] = None, output_hidden_states: bool = False,
                 last_logits_only: bool = False, num_logits: Optional[int] = None,
                 prefix=None) -> TransformerOutput:
        """num_logits: logits for the last n positions only (0: none, e.g. to read hidden states;
        None: all). last_logits_only is num_logits=1. prefix: a `models.SharedPrefix` the batch
        continues (its keys and values per layer, read by every row; positions must continue it)."""
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, param_dtype=self.dtype,
                         name="embed_tokens")
        x = embed(input_ids)
        steered = set(intervention.layers) if intervention is not None else set()
        hidden_states, aux, new_cache = [], [], []
        for i in range(cfg.num_layers):
            if i in steered:
                x, extra = intervention(i, x)
                aux.append(extra)
            if output_hidden_states:
                hidden_states.append(x)
            layer_prefix = (None if prefix is None else
                            (prefix.kv_cache[i][0], prefix.kv_cache[i][1], prefix.kv_mask))
            x, layer_cache = DecoderBlock(cfg, self.dtype, name=f"layers_{i}")(
                x, positions, kv_cache[i], cache_index, kv_mask, layer_prefix)
            new_cache.append(layer_cache)
        x = RMSNorm(cfg.rms_norm_eps, self.dtype, name="norm")(x)
        if output_hidden_states:
            hidden_states.append(x)
        if last_logits_only:
            num_logits = 1
        if num_logits is not None:
            x = x[:, x.shape[1] - num_logits:]
        if num_logits == 0 and not self.is_initializing():
            logits = None  # the head is the costliest matmul of a small model's forward
        elif cfg.tie_word_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=self.dtype,
                              param_dtype=self.dtype, name="lm_head")(x)
        return TransformerOutput(
            logits=None if logits is None else logits.astype(jnp.float32),
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            kv_cache=tuple(new_cache),
            intervention_aux=tuple(aux))
