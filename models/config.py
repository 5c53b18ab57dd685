"""Model configuration: one frozen, hashable dataclass for every supported family.

It is built from a transformers config object (read with `AutoConfig`, so both the released
`rope_scaling` form and the newer `rope_parameters` form arrive normalised), or from GGUF metadata.
Fields we do not implement raise `UnsupportedConfigError` instead of running silently wrong.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

SUPPORTED_FAMILIES = ("llama", "qwen3")


class UnsupportedConfigError(ValueError):
    """A checkpoint asks for something the Flax ports do not implement."""


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str  # "llama" | "qwen3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    rope_scaling: Optional[Llama3RopeScaling] = None
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: Optional[int] = None

    def __post_init__(self):
        if self.family not in SUPPORTED_FAMILIES:
            raise UnsupportedConfigError(
                f"model family {self.family!r} is not supported; expected one of {SUPPORTED_FAMILIES}")
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedConfigError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}")


def _as_tuple(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _get(cfg, name, default=None):
    return getattr(cfg, name, default) if not isinstance(cfg, dict) else cfg.get(name, default)


def _rope_parameters(hf) -> dict[str, Any]:
    """The rope settings in the newer `rope_parameters` form, whichever form the config used."""
    params = _get(hf, "rope_parameters")
    if params is None:  # older transformers: rope_theta + rope_scaling
        params = dict(_get(hf, "rope_scaling") or {})
        params.setdefault("rope_theta", _get(hf, "rope_theta", 10000.0))
    params = dict(params)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    if "full_attention" in params and isinstance(params["full_attention"], dict):
        raise UnsupportedConfigError("per-layer-type rope_parameters are not supported")
    return params


def _rope_from_parameters(params: dict[str, Any]) -> tuple[float, Optional[Llama3RopeScaling]]:
    rope_type = params["rope_type"]
    theta = float(params.get("rope_theta", 10000.0))
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                               "original_max_position_embeddings") if params.get(k) is None]
        if missing:
            raise UnsupportedConfigError(f"llama3 rope scaling is missing {missing} in {params}")
        return theta, Llama3RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]))
    raise UnsupportedConfigError(
        f"rope_type {rope_type!r} is not supported; expected 'default' or 'llama3'")


def from_hf_config(hf) -> ModelConfig:
    """Translate a transformers `PretrainedConfig` (Llama or Qwen3) into a `ModelConfig`."""
    model_type = _get(hf, "model_type")
    if model_type not in SUPPORTED_FAMILIES:
        raise UnsupportedConfigError(
            f"model_type {model_type!r} is not supported; expected one of {SUPPORTED_FAMILIES}")
    act = _get(hf, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedConfigError(f"hidden_act={act!r} is not supported; expected 'silu'")
    if model_type == "qwen3":
        layer_types = _get(hf, "layer_types") or ()
        if _get(hf, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
            raise UnsupportedConfigError(
                f"Qwen3 sliding-window attention is not supported (use_sliding_window="
                f"{_get(hf, 'use_sliding_window')}, sliding_window={_get(hf, 'sliding_window')})")
    num_heads = int(_get(hf, "num_attention_heads"))
    hidden = int(_get(hf, "hidden_size"))
    head_dim = _get(hf, "head_dim") or hidden // num_heads
    theta, scaling = _rope_from_parameters(_rope_parameters(hf))
    return ModelConfig(
        family=model_type,
        vocab_size=int(_get(hf, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_get(hf, "intermediate_size")),
        num_layers=int(_get(hf, "num_hidden_layers")),
        num_heads=num_heads,
        num_kv_heads=int(_get(hf, "num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(_get(hf, "rms_norm_eps")),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(_get(hf, "max_position_embeddings")),
        attention_bias=bool(_get(hf, "attention_bias", False)),
        mlp_bias=bool(_get(hf, "mlp_bias", False)),
        tie_word_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
        qk_norm=model_type == "qwen3",
        bos_token_id=_get(hf, "bos_token_id"),
        eos_token_ids=_as_tuple(_get(hf, "eos_token_id")),
        pad_token_id=_get(hf, "pad_token_id"),
    )
