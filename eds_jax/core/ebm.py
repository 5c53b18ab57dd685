"""Energy models (EBMs): small MLPs that read a hidden state and return a scalar energy.

Two architectures, as upstream:
- simple:  Linear(d, h) -> SiLU -> Linear(h, h/2) -> SiLU -> Linear(h/2, 1)
- complex: per hidden width [Linear -> LayerNorm? -> SiLU -> Dropout], then Linear(-, 1)

An `EBM` is a pytree: its parameters are traced, its `EBMSpec` (architecture and widths) is static.
Energies are computed in float32 whatever the activation dtype.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

ARCHITECTURES = ("simple", "complex")
COMPLEX_DEFAULT_WIDTHS = (2048, 1024, 1024, 512)
_TORCH_LAYERNORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class EBMSpec:
    architecture: str
    input_dim: int
    hidden_dims: tuple[int, ...]
    dropout_rate: float = 0.0
    use_layernorm: bool = False

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"EBM architecture {self.architecture!r} is unknown; "
                             f"expected one of {ARCHITECTURES}")
        if self.input_dim <= 0 or any(w <= 0 for w in self.hidden_dims) or not self.hidden_dims:
            raise ValueError(f"EBM widths must be positive: input_dim={self.input_dim}, "
                             f"hidden_dims={self.hidden_dims}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate={self.dropout_rate} must be in [0, 1)")

    @classmethod
    def simple(cls, input_dim: int, hidden_dim: int = 512) -> "EBMSpec":
        return cls("simple", int(input_dim), (int(hidden_dim), int(hidden_dim) // 2))

    @classmethod
    def complex(cls, input_dim: int, hidden_dims: Sequence[int] = COMPLEX_DEFAULT_WIDTHS,
                dropout_rate: float = 0.15, use_layernorm: bool = True) -> "EBMSpec":
        return cls("complex", int(input_dim), tuple(int(w) for w in hidden_dims),
                   float(dropout_rate), bool(use_layernorm))

    @classmethod
    def build(cls, architecture: str, input_dim: int, hidden_dim: int = 512,
              hidden_dims: Sequence[int] = COMPLEX_DEFAULT_WIDTHS, dropout_rate: float = 0.15,
              use_layernorm: bool = True) -> "EBMSpec":
        """The spec of an upstream architecture by name ("simple" uses hidden_dim, "complex" the rest)."""
        if architecture == "simple":
            return cls.simple(input_dim, hidden_dim)
        if architecture == "complex":
            return cls.complex(input_dim, hidden_dims, dropout_rate, use_layernorm)
        raise ValueError(f"EBM architecture {architecture!r} is unknown; expected one of {ARCHITECTURES}")

    def module(self) -> "EnergyMLP":
        return EnergyMLP(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EBMSpec":
        return cls(d["architecture"], int(d["input_dim"]), tuple(int(w) for w in d["hidden_dims"]),
                   float(d.get("dropout_rate", 0.0)), bool(d.get("use_layernorm", False)))


class EnergyMLP(nn.Module):
    spec: EBMSpec

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        spec = self.spec
        x = x.astype(jnp.float32)
        for i, width in enumerate(spec.hidden_dims):
            x = nn.Dense(width, name=f"linear_{i}")(x)
            if spec.use_layernorm:
                x = nn.LayerNorm(epsilon=_TORCH_LAYERNORM_EPS, name=f"norm_{i}")(x)
            x = nn.silu(x)
            if spec.dropout_rate > 0:
                x = nn.Dropout(spec.dropout_rate, deterministic=deterministic)(x)
        return nn.Dense(1, name="out")(x)[..., 0]


@flax.struct.dataclass
class EBM:
    """Parameters plus static spec; `energy(h)` maps [..., D] to float32 [...]."""
    params: Any
    spec: EBMSpec = flax.struct.field(pytree_node=False)

    @classmethod
    def init(cls, spec: EBMSpec, rng: jax.Array) -> "EBM":
        params = spec.module().init(rng, jnp.zeros((1, spec.input_dim), jnp.float32))["params"]
        return cls(params=params, spec=spec)

    def energy(self, hidden, dropout_rng: Optional[jax.Array] = None):
        """Energy in eval mode, or with dropout when `dropout_rng` is given (upstream's behaviour)."""
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.spec.module().apply({"params": self.params}, hidden,
                                        deterministic=dropout_rng is None, rngs=rngs)


MAX_ABS_PARAM = 1e6  # trained EBM weights are O(1); larger means corrupt bytes (energy overflows)


def check_params(params, source: str) -> None:
    """Raise when a parameter is NaN/inf or implausibly large: a corrupt checkpoint that would
    otherwise steer with NaN and decode nothing."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        value = np.asarray(leaf)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if not np.isfinite(value).all():
            raise ValueError(f"{source}: parameter {name} holds {int((~np.isfinite(value)).sum())} "
                             "NaN/inf values; the checkpoint is corrupt")
        if value.size and np.abs(value).max() > MAX_ABS_PARAM:
            raise ValueError(f"{source}: parameter {name} holds |values| up to {np.abs(value).max():.3g} "
                             f"(> {MAX_ABS_PARAM:g}); the checkpoint is corrupt")


def _torch_layout(spec: EBMSpec) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """Upstream state-dict key -> (Flax param path, torch shape), from nn.Sequential indices."""
    layout = {}
    index, fan_in = 0, spec.input_dim
    for i, width in enumerate(spec.hidden_dims):
        layout[f"network.{index}.weight"] = ((f"linear_{i}", "kernel"), (width, fan_in))
        layout[f"network.{index}.bias"] = ((f"linear_{i}", "bias"), (width,))
        index += 1
        if spec.use_layernorm:
            layout[f"network.{index}.weight"] = ((f"norm_{i}", "scale"), (width,))
            layout[f"network.{index}.bias"] = ((f"norm_{i}", "bias"), (width,))
            index += 1
        index += 1  # SiLU
        if spec.architecture == "complex" and spec.dropout_rate > 0:
            index += 1  # Dropout
        fan_in = width
    layout[f"network.{index}.weight"] = (("out", "kernel"), (1, fan_in))
    layout[f"network.{index}.bias"] = (("out", "bias"), (1,))
    return layout


def ebm_from_state_dict(state_dict: dict[str, Any], spec: EBMSpec, source: str = "state dict") -> EBM:
    """Build an `EBM` from an upstream PyTorch state dict given as numpy-convertible arrays."""
    layout = _torch_layout(spec)
    missing = [k for k in layout if k not in state_dict]
    unexpected = [k for k in state_dict if k not in layout]
    if missing or unexpected:
        raise ValueError(f"{source}: keys do not match a {spec.architecture} EBM with widths "
                         f"{spec.hidden_dims} (layernorm={spec.use_layernorm}, dropout="
                         f"{spec.dropout_rate}): missing {missing}, unexpected {unexpected}")
    params: dict = {}
    for key, (path, torch_shape) in layout.items():
        value = np.asarray(state_dict[key], np.float32)
        if value.shape != torch_shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected "
                             f"{torch_shape} for input_dim={spec.input_dim}, widths {spec.hidden_dims}")
        if path[1] == "kernel":
            value = value.T
        params.setdefault(path[0], {})[path[1]] = jnp.asarray(value)
    check_params(params, source)
    return EBM(params=params, spec=spec)


def load_torch_ebm(path: str, architecture: str = "simple", input_dim: int = None,
                   hidden_dim: int = 512, hidden_dims: Sequence[int] = COMPLEX_DEFAULT_WIDTHS,
                   dropout_rate: float = 0.15, use_layernorm: bool = True) -> EBM:
    """Import an upstream `.pt` state dict (network.0.weight, ...). torch is imported here only."""
    import os
    if input_dim is None:
        raise ValueError("input_dim (the model's hidden size) is required")
    spec = EBMSpec.build(architecture, input_dim, hidden_dim, hidden_dims, dropout_rate, use_layernorm)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EBM file {path!r} does not exist")
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds on a corrupt file
        # torch's own message suggests weights_only=False, i.e. running the file's code: not passed on
        raise ValueError(f"cannot read EBM state dict {path!r}: not a PyTorch state-dict file "
                         f"({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return ebm_from_state_dict({k: v.detach().float().numpy() for k, v in state.items()}, spec, path)
