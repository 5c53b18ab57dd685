"""Placement on a (data, model) mesh: LLM parameters split on `model`, batch rows split on `data`.

Attention heads and MLP columns are split across `model` (Megatron style: q/k/v and gate/up by
output, o and down by input), the vocabulary of the embedding and head too; norms are replicated.
`jax.jit` propagates these shardings through `forward` and the decode loop.
"""
from __future__ import annotations

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from models.config import ModelConfig

_BY_OUTPUT = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
_BY_INPUT = ("o_proj", "down_proj")


def _spec(path: tuple[str, ...], axis: str) -> P:
    module, leaf = path[-2], path[-1]
    if module == "embed_tokens":
        return P(axis, None)
    if module == "lm_head":
        return P(None, axis)
    if module in _BY_OUTPUT:
        return P(None, axis) if leaf == "kernel" else P(axis)
    if module in _BY_INPUT:
        return P(axis, None) if leaf == "kernel" else P()
    return P()  # RMSNorm scales


def param_shardings(config: ModelConfig, mesh: Mesh, axis: str = "model") -> dict:
    """{flax path: NamedSharding} for every parameter; the axis must divide heads, MLP and vocab."""
    from models.checkpoint import param_shapes
    size = mesh.shape[axis]
    for name, value in (("num_key_value_heads", config.num_kv_heads), ("num_attention_heads", config.num_heads),
                        ("intermediate_size", config.intermediate_size), ("vocab_size", config.vocab_size)):
        if value % size:
            raise ValueError(f"mesh axis {axis!r} of size {size} does not divide {name}={value}")
    return {path: NamedSharding(mesh, _spec(path, axis)) for path in param_shapes(config, "float32")}


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Rows of a batch split over the mesh's `data` axis (the other dimensions replicated)."""
    return NamedSharding(mesh, P(axis))


def pad_rows(arrays, rows: int) -> tuple:
    """Repeat each array's last row up to `rows` rows (the extra outputs are dropped by the caller)."""
    import numpy as np
    return tuple(np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], 0)]) if rows > a.shape[0] else a
                 for a in arrays)


def _row_multiple(sharding: NamedSharding) -> int:
    """How many shards the batch's rows are split into."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = 1
    for axis in axes:
        size *= sharding.mesh.shape[axis]
    return size


def shard_rows(arrays, sharding: NamedSharding) -> tuple:
    """Global arrays from host arrays that every process holds whole; each process materialises only
    the rows of its own devices (so a multi-host run reads no one else's share onto its chips).
    Rows are padded (last row repeated) to a multiple of the shard count; slice outputs back."""
    import jax
    multiple = _row_multiple(sharding)
    rows = -(-arrays[0].shape[0] // multiple) * multiple
    return tuple(jax.make_array_from_callback(a.shape, sharding, lambda index, a=a: a[index])
                 for a in pad_rows(arrays, rows))


def gather_rows(tree):
    """Every process gets the whole of each (row-sharded) global array, as numpy."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)
