"""Map Hugging Face tensor names onto the Flax parameter tree, filling every parameter exactly once.

Both checkpoint readers (safetensors and GGUF) yield `(hf_name, numpy array in HF layout)` pairs;
this module checks names and shapes and places each tensor, one at a time, on its device.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from models.config import ModelConfig
from models.transformer import CausalLM, init_kv_cache


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model config."""


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "self_attn.q_proj.weight": ("self_attn", "q_proj", "kernel"),
    "self_attn.k_proj.weight": ("self_attn", "k_proj", "kernel"),
    "self_attn.v_proj.weight": ("self_attn", "v_proj", "kernel"),
    "self_attn.o_proj.weight": ("self_attn", "o_proj", "kernel"),
    "self_attn.q_proj.bias": ("self_attn", "q_proj", "bias"),
    "self_attn.k_proj.bias": ("self_attn", "k_proj", "bias"),
    "self_attn.v_proj.bias": ("self_attn", "v_proj", "bias"),
    "self_attn.o_proj.bias": ("self_attn", "o_proj", "bias"),
    "self_attn.q_norm.weight": ("self_attn", "q_norm", "scale"),
    "self_attn.k_norm.weight": ("self_attn", "k_norm", "scale"),
    "mlp.gate_proj.weight": ("mlp", "gate_proj", "kernel"),
    "mlp.up_proj.weight": ("mlp", "up_proj", "kernel"),
    "mlp.down_proj.weight": ("mlp", "down_proj", "kernel"),
    "mlp.gate_proj.bias": ("mlp", "gate_proj", "bias"),
    "mlp.up_proj.bias": ("mlp", "up_proj", "bias"),
    "mlp.down_proj.bias": ("mlp", "down_proj", "bias"),
    "input_layernorm.weight": ("input_layernorm", "scale"),
    "post_attention_layernorm.weight": ("post_attention_layernorm", "scale"),
}
_IGNORED = re.compile(r"rotary_emb\.inv_freq$")


def flax_path(hf_name: str) -> tuple[str, ...]:
    """The Flax parameter path of a Hugging Face tensor name (ValueError if unknown)."""
    if hf_name == "model.embed_tokens.weight":
        return ("embed_tokens", "embedding")
    if hf_name == "model.norm.weight":
        return ("norm", "scale")
    if hf_name == "lm_head.weight":
        return ("lm_head", "kernel")
    match = _LAYER.match(hf_name)
    if match and match.group(2) in _LAYER_PARTS:
        return (f"layers_{match.group(1)}",) + _LAYER_PARTS[match.group(2)]
    raise CheckpointError(f"checkpoint tensor {hf_name!r} has no place in the Flax model")


def param_shapes(config: ModelConfig, dtype) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Every parameter's path, shape and dtype, without allocating anything."""
    module = CausalLM(config, dtype)
    ids = jnp.zeros((1, 1), jnp.int32)

    def init():
        return module.init(jax.random.PRNGKey(0), ids, ids, init_kv_cache(config, 1, 1, dtype),
                           0, jnp.ones((1, 1), bool))["params"]

    return traverse_util.flatten_dict(jax.eval_shape(init))


def fill_params(config: ModelConfig, tensors: Iterable[tuple[str, np.ndarray]], dtype,
                source: str, shardings=None) -> dict:
    """Build the parameter tree from (hf_name, array) pairs.

    Every parameter must be filled exactly once with the right shape; a tied checkpoint that also
    carries `lm_head.weight` must carry the embedding there. `shardings`, when given, maps a Flax
    path to the `jax.sharding.Sharding` each tensor is placed on as it is read.
    """
    expected = param_shapes(config, dtype)
    filled: dict[tuple[str, ...], jax.Array] = {}
    tied_head = None
    for name, array in tensors:
        if _IGNORED.search(name):
            continue
        if name == "lm_head.weight" and config.tie_word_embeddings:
            tied_head = np.asarray(array)
            continue
        path = flax_path(name)
        if path not in expected:
            raise CheckpointError(f"{source}: tensor {name!r} does not exist in a {config.family} "
                                  f"model with this config (no parameter {'/'.join(path)})")
        if path in filled:
            raise CheckpointError(f"{source}: tensor {name!r} appears twice")
        array = np.asarray(array)
        if path[-1] == "kernel":
            array = array.T  # HF Linear stores [out, in]
        want = expected[path].shape
        if array.shape != want:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {array.shape} (Flax layout), "
                                  f"expected {want} from the config")
        value = np.asarray(array, dtype=np.dtype(jnp.dtype(dtype)))
        sharding = shardings.get(path) if shardings else None
        filled[path] = jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
    missing = sorted("/".join(p) for p in expected if p not in filled)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} parameters missing from the checkpoint, "
                              f"e.g. {missing[:5]}")
    if tied_head is not None:
        embedding = np.asarray(filled[("embed_tokens", "embedding")], np.float32)
        if not np.allclose(tied_head.astype(np.float32), embedding, rtol=1e-2, atol=1e-3):
            raise CheckpointError(f"{source}: config ties the embeddings but lm_head.weight differs "
                                  "from model.embed_tokens.weight")
    return traverse_util.unflatten_dict(filled)


def iter_safetensors(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Tensors of one file at a time, as numpy (bfloat16 comes back as ml_dtypes.bfloat16)."""
    from safetensors import SafetensorError, safe_open
    for file in files:
        try:
            with safe_open(file, framework="numpy") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read safetensors file {file}: {err}") from err
