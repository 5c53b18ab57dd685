"""Steering-vector baselines, run as interventions through the same forward hook and decode loop as EDS.

- activation addition (`mode="add"`): h <- h + coeff * v_l. With the difference-of-means "refusal
  direction" v_l = mean(harmful) - mean(benign) and coeff < 0, the direction is subtracted;
- direction ablation (`mode="ablate"`): h <- h - coeff * (h . r_l) r_l, r_l = v_l / ||v_l||
  (coeff 1: the direction is removed; a strength between 0 and 1 removes part of it);
- SafeSteer-style category vectors: v_l = mean(harmful prompts of one category) - mean(benign),
  applied with `mode="add"` and a coefficient;
- false-refusal vector ablation (Wang et al., ICLR 2025): v_l = mean(pseudo-harmful) -
  mean(harmless), orthogonalised against the true-refusal direction (`orthogonalise`), ablated.

`scaled_to_norm` turns each layer's vector into a unit vector times that layer's typical
hidden-state norm, so an added coefficient is a fraction of the norm: the scale of EDS's
`eta_scale="hidden_norm"` steps, comparable across layers and models.

Vectors are built from last-prompt-token activations at the input of each block ([N, L, D], as
`collect.last_token_activations` returns them). Unlike EDS, which moves only the newest position,
these act on every position the forward call sees (the prompt at prefill, then each new token),
as activation addition and ablation are defined.
"""
from __future__ import annotations

import copy
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eds_jax.core.gate import PromptGate
from eds_jax.core.steering import check_opened, check_setting, per_row_count, row_column, take_per_row
from models.pretrained import check_intervention_layers

MODES = ("add", "ablate")


def mean_difference(harmful: np.ndarray, benign: np.ndarray) -> np.ndarray:
    """[L, D]: mean harmful activation minus mean benign activation, per layer (float64 means)."""
    harmful, benign = np.asarray(harmful), np.asarray(benign)
    if harmful.ndim != 3 or benign.ndim != 3 or harmful.shape[1:] != benign.shape[1:]:
        raise ValueError(f"activations must be [N, layers, width] with equal layers and width, got "
                         f"harmful {harmful.shape} and benign {benign.shape}")
    if not len(harmful) or not len(benign):
        raise ValueError(f"need harmful and benign activations, got {len(harmful)} and {len(benign)} rows")
    return (harmful.mean(0, dtype=np.float64) - benign.mean(0, dtype=np.float64)).astype(np.float32)


def category_vectors(harmful: np.ndarray, categories: Sequence[str], benign: np.ndarray,
                     min_count: int = 2) -> dict[str, np.ndarray]:
    """SafeSteer-style: {category: [L, D]} = mean of that category's harmful rows - mean of benign."""
    categories = np.asarray([str(c) for c in categories])
    if len(categories) != len(harmful):
        raise ValueError(f"{len(categories)} categories for {len(harmful)} harmful activations")
    vectors = {}
    for name in sorted(set(categories)):
        rows = harmful[categories == name]
        if len(rows) >= min_count:
            vectors[name] = mean_difference(rows, benign)
    if not vectors:
        raise ValueError(f"no category has >= {min_count} prompts: {sorted(set(categories))}")
    return vectors


def orthogonalise(vectors: np.ndarray, against: np.ndarray) -> np.ndarray:
    """[L, D]: each layer's vector with its component along `against`'s direction removed (a
    layer where `against` is zero, e.g. the input of block 0 at a template's fixed last token, has
    nothing to remove)."""
    v, u = np.asarray(vectors, np.float64), np.asarray(against, np.float64)
    if v.shape != u.shape or v.ndim != 2:
        raise ValueError(f"need two [L, D] arrays of one shape, got {v.shape} and {u.shape}")
    norms = np.linalg.norm(u, axis=-1, keepdims=True)
    unit = np.where(norms > 0, u / np.maximum(norms, 1e-300), 0.0)
    return (v - np.sum(v * unit, axis=-1, keepdims=True) * unit).astype(np.float32)


def scaled_to_norm(vectors: np.ndarray, norms: Mapping[int, float]) -> dict[int, np.ndarray]:
    """{layer: that layer's unit vector times its norm} for the layers of `norms` (e.g.
    `steering.median_hidden_norms`), so an added coefficient is a fraction of the norm."""
    out = {}
    for layer, norm in norms.items():
        v = np.asarray(vectors[layer], np.float64)
        length = np.linalg.norm(v)
        out[int(layer)] = (v / length * norm if length > 0 else np.zeros_like(v)).astype(np.float32)
    return out


@jax.tree_util.register_pytree_node_class
class VectorSteering:
    """A fixed vector per layer, added (`mode="add"`) or projected out (`mode="ablate"`).

    vectors: {layer: [D]} or an [L, D] array together with `layers`. The same interface as
    `Steering` (layers, check_model, at_call, __call__), so `steered_generate` takes either.
    gate: an optional `PromptGate`, read as `Steering` reads it (only the rows it opens steer).
    """
    record_energy_after = False

    def __init__(self, vectors, mode: str = "add", coeff: float = 1.0,
                 layers: Sequence[int] | None = None, gate: Optional[PromptGate] = None):
        if gate is not None and not isinstance(gate, PromptGate):
            raise ValueError(f"gate must be a PromptGate or None, got {type(gate).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is unknown; expected one of {MODES}")
        if not isinstance(vectors, Mapping):
            table = np.asarray(vectors)
            if layers is None:
                raise ValueError("give the layers to steer together with an [L, D] vector array")
            bad = [layer for layer in layers if not 0 <= int(layer) < len(table)]
            if bad:
                raise ValueError(f"layers {bad} are outside the {len(table)} layers of the vectors")
            vectors = {int(layer): table[int(layer)] for layer in layers}
        elif layers is not None:
            missing = sorted(set(int(layer) for layer in layers) - set(vectors))
            if missing:
                raise ValueError(f"no vector for layers {missing}; vectors cover {sorted(vectors)}")
            vectors = {int(layer): vectors[int(layer)] for layer in layers}
        if not vectors:
            raise ValueError("VectorSteering needs at least one layer")
        widths = {int(layer): np.shape(v) for layer, v in vectors.items()}
        if len(set(widths.values())) != 1 or len(next(iter(widths.values()))) != 1:
            raise ValueError(f"each vector must be one [D] array of the same width, got {widths}")
        if mode == "ablate":
            zero = [layer for layer, v in vectors.items() if not np.linalg.norm(v) > 0]
            if zero:
                raise ValueError(f"cannot ablate a zero direction (layers {zero})")
        self.mode = mode
        self.vectors = {layer: jnp.asarray(vectors[layer], jnp.float32) for layer in sorted(vectors)}
        self.coeff = jnp.asarray(check_setting("coeff", coeff), jnp.float32)
        self.gate = gate

    def tree_flatten(self):
        return (self.vectors, self.coeff, self.gate), self.mode

    @classmethod
    def tree_unflatten(cls, mode, children):
        obj = object.__new__(cls)
        obj.vectors, obj.coeff, obj.gate = children
        obj.mode = mode
        return obj

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.vectors)

    def check_model(self, config) -> None:
        check_intervention_layers(self.layers, config)
        width = next(iter(self.vectors.values())).shape[0]
        if width != config.hidden_size:
            raise ValueError(f"steering vector width {width} != model hidden size {config.hidden_size}")
        if self.gate is not None:
            self.gate.check_model(config)

    @property
    def batch_rows(self) -> Optional[int]:
        """The batch size a per-row coefficient ([B]) fixes, or None."""
        return per_row_count([self.coeff])

    def open_rows(self, opened) -> "VectorSteering":
        """Ungated, with coefficient 0 on the rows not `opened` [B] (they decode as unsteered)."""
        gated = copy.copy(self)
        gated.coeff = self.coeff * jnp.asarray(check_opened(opened, self.batch_rows), jnp.float32)
        gated.gate = None
        return gated

    def take_rows(self, rows) -> "VectorSteering":
        taken = copy.copy(self)
        taken.coeff = take_per_row(self.coeff, rows)
        return taken

    def prefix_intervention(self) -> "VectorSteering":
        """Itself: a vector acts on every position, so a shared prefix's keys are computed under it.
        A per-row coefficient that is the same on every row (a sweep's batch of one candidate)
        comes back as one scalar, so the prefix is prefilled once, not once per row."""
        coeff = np.asarray(self.coeff)
        if coeff.ndim == 1 and coeff.size and np.all(coeff == coeff[0]):
            uniform = copy.copy(self)
            uniform.coeff = jnp.asarray(coeff[0], jnp.float32)
            return uniform
        return self

    def row_groups(self) -> np.ndarray:
        """One group id per batch row: rows with the same coefficient share one."""
        return np.unique(np.asarray(self.coeff), return_inverse=True)[1].reshape(-1)

    def at_call(self, call_index) -> "VectorSteering":
        return self

    def __call__(self, layer: int, hidden: jax.Array):
        v = self.vectors[layer]
        x = hidden.astype(jnp.float32)
        if self.mode == "add":
            x = x + row_column(self.coeff)[..., None] * v  # [B, 1, 1] per row, or a scalar
        else:
            r = v / jnp.linalg.norm(v)
            x = x - row_column(self.coeff)[..., None] * jnp.einsum("btd,d->bt", x, r)[..., None] * r
        return x.astype(hidden.dtype), None
