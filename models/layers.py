"""Shared Flax layers for the Llama and Qwen3 ports.

Numerics follow transformers: RMSNorm and RoPE angles in float32, attention scores and softmax in
float32, everything else in the parameter dtype. Dense kernels are stored [in, out].
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import Llama3RopeScaling, ModelConfig

_MASKED = float(jnp.finfo(jnp.float32).min)  # finite: fully padded rows stay NaN-free


class RMSNorm(nn.Module):
    eps: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale * normed.astype(x.dtype)


def rope_inverse_frequencies(head_dim: int, theta: float,
                             scaling: Optional[Llama3RopeScaling]) -> jnp.ndarray:
    """Inverse frequencies [head_dim/2], float32, with llama3 scaling read from the config."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(is_medium, smoothed, scaled)


def apply_rope(x, positions, inv_freq):
    """x [B, T, H, Dh], positions int [B, T]; rotate-half layout as in transformers."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    config: ModelConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, kv_cache, cache_index, kv_mask, prefix=None):
        """x [B, T, D]; kv_cache (k, v) each [B, Hkv, S, Dh]; the new keys land at cache_index.

        kv_mask [B, S] marks real tokens; a query at cache slot i sees slots <= i that are real.
        prefix: (k, v, mask) of a prompt prefix every row continues, [R, Hkv, P, Dh] and [R, P]
        with R = 1 (shared: its keys are read once for all rows) or B; every query sees its real
        slots, before the row's own cache.
        """
        cfg = self.config
        dense = lambda n, name, bias: nn.Dense(n, use_bias=bias, dtype=self.dtype,
                                               param_dtype=self.dtype, name=name)
        batch, length, _ = x.shape
        q = dense(cfg.num_heads * cfg.head_dim, "q_proj", cfg.attention_bias)(x)
        k = dense(cfg.num_kv_heads * cfg.head_dim, "k_proj", cfg.attention_bias)(x)
        v = dense(cfg.num_kv_heads * cfg.head_dim, "v_proj", cfg.attention_bias)(x)
        q = q.reshape(batch, length, cfg.num_heads, cfg.head_dim)
        k = k.reshape(batch, length, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(batch, length, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q = RMSNorm(cfg.rms_norm_eps, self.dtype, name="q_norm")(q)
            k = RMSNorm(cfg.rms_norm_eps, self.dtype, name="k_norm")(k)
        inv_freq = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)

        # heads before slots, so the score and value matmuls read the cache without a transpose
        cache_k, cache_v = kv_cache
        k = k.transpose(0, 2, 1, 3).astype(cache_k.dtype)  # [B, Hkv, T, Dh]
        v = v.transpose(0, 2, 1, 3).astype(cache_v.dtype)
        cache_k = jax.lax.dynamic_update_slice(cache_k, k, (0, 0, cache_index, 0))
        cache_v = jax.lax.dynamic_update_slice(cache_v, v, (0, 0, cache_index, 0))

        groups = cfg.num_heads // cfg.num_kv_heads
        q = q.reshape(batch, length, cfg.num_kv_heads, groups, cfg.head_dim).transpose(0, 2, 3, 1, 4)
        scale = 1.0 / math.sqrt(cfg.head_dim)
        if length == 1:  # decode: a fused multiply-reduce streams the cache once (memory-bound)
            scores = jnp.sum(q.astype(jnp.float32) * cache_k[:, :, None].astype(jnp.float32),
                             axis=-1)[..., None, :] * scale
        else:
            scores = jnp.einsum("bkgtd,bksd->bkgts", q, cache_k,
                                preferred_element_type=jnp.float32) * scale
        query_slot = cache_index + jnp.arange(length)
        causal = jnp.arange(cache_k.shape[2])[None, :] <= query_slot[:, None]  # [T, S]
        visible = causal[None, :, :] & kv_mask[:, None, :]  # [B, T, S]
        scores = jnp.where(visible[:, None, None], scores, _MASKED)
        if prefix is not None:
            prefix_k, prefix_v, prefix_mask = prefix
            # one row (shared by all: no batch axis, read once) or one per row
            rows = "ksd" if prefix_k.shape[0] == 1 else "bksd"
            prefix_k, prefix_v = ((prefix_k[0], prefix_v[0]) if rows == "ksd" else (prefix_k, prefix_v))
            prefix_scores = jnp.einsum(f"bkgtd,{rows}->bkgts", q, prefix_k.astype(q.dtype),
                                       preferred_element_type=jnp.float32) * scale
            prefix_scores = jnp.where(prefix_mask[:, None, None, None, :], prefix_scores, _MASKED)
            scores = jnp.concatenate([prefix_scores, scores], axis=-1)
        probs = jax.nn.softmax(scores, axis=-1)
        if prefix is not None:
            prefix_probs, probs = jnp.split(probs, [prefix_mask.shape[1]], axis=-1)
        if length == 1:  # accumulated in float32, like the matmul's accumulator
            out = jnp.sum(probs[:, :, :, 0, :, None] * cache_v[:, :, None].astype(jnp.float32),
                          axis=-2)[:, None]
        else:
            out = jnp.einsum("bkgts,bksd->btkgd", probs.astype(self.dtype), cache_v,
                             preferred_element_type=jnp.float32)
        if prefix is not None:
            out = out + jnp.einsum(f"bkgts,{rows}->btkgd", prefix_probs.astype(self.dtype),
                                   prefix_v.astype(self.dtype), preferred_element_type=jnp.float32)
        out = out.astype(self.dtype)
        out = out.reshape(batch, length, cfg.num_heads * cfg.head_dim)
        return dense(cfg.hidden_size, "o_proj", cfg.attention_bias)(out), (cache_k, cache_v)


class MLP(nn.Module):
    config: ModelConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dense = lambda n, name: nn.Dense(n, use_bias=cfg.mlp_bias, dtype=self.dtype,
                                         param_dtype=self.dtype, name=name)
        gate = dense(cfg.intermediate_size, "gate_proj")(x)
        up = dense(cfg.intermediate_size, "up_proj")(x)
        return dense(cfg.hidden_size, "down_proj")(nn.silu(gate) * up)


class DecoderBlock(nn.Module):
    config: ModelConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, kv_cache, cache_index, kv_mask, prefix=None):
        cfg = self.config
        attn_in = RMSNorm(cfg.rms_norm_eps, self.dtype, name="input_layernorm")(x)
        attn_out, kv_cache = Attention(cfg, self.dtype, name="self_attn")(
            attn_in, positions, kv_cache, cache_index, kv_mask, prefix)
        x = x + attn_out
        mlp_in = RMSNorm(cfg.rms_norm_eps, self.dtype, name="post_attention_layernorm")(x)
        return x + MLP(cfg, self.dtype, name="mlp")(mlp_in), kv_cache
