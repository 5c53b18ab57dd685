"""The prompt gate: which rows steering may act on, decided once per prompt.

An EBM's energy answers two questions in one number: is the prompt benign or harmful, and is the
state heading for a refusal. Its gradient points the same way at a false refusal and at a true
one (cosine 0.98-0.99 on SmolLM2), so selectivity has to come from *which rows* take steps. A
linear read-out of the prompt's kind from the model's own state at the last prompt token (the
state the EBMs are trained on) separates benign from harmful prompts far better than the energy
does (validation AUC 0.99 vs 0.65-0.76 between false and true refusals, docs/experiments.md).

`PromptGate` scores the state entering block `layer` at the last prompt token; a row opens when
its score is above `threshold` (fitted by `eds_jax.training.gate.fit_prompt_gate`: a high quantile
of held-out harmful prompts' scores, so few harmful prompts open). `steered_generate` runs the
prompt once without steering, reads the gate, and steers only the open rows (the closed ones take
steps of length 0 and decode exactly as unsteered).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_pytree_node_class
class PromptGate:
    """score = state @ weight + bias at block `layer`'s input, last prompt token; open if > threshold.

    weight [D] and bias already fold in the standardisation the read-out was fitted with.
    `info`: how it was fitted (quantile, held-out AUC per layer, ...), saved beside it.
    """

    def __init__(self, layer: int, weight, bias: float, threshold: float, info: Optional[dict] = None):
        if isinstance(layer, bool) or int(layer) != layer or layer < 0:
            raise ValueError(f"gate layer must be a block index >= 0, got {layer!r}")
        weight = np.asarray(weight, np.float32)
        if weight.ndim != 1 or weight.size == 0 or not np.isfinite(weight).all():
            raise ValueError(f"gate weight must be a finite 1-D array [hidden size], got shape "
                             f"{weight.shape}")
        for name, value in (("bias", bias), ("threshold", threshold)):
            if not np.isfinite(np.asarray(value, np.float64)).all() or np.ndim(value) != 0:
                raise ValueError(f"gate {name} must be one finite number, got {value!r}")
        self.layer = int(layer)
        self.weight = jnp.asarray(weight)
        self.bias = jnp.float32(bias)
        self.threshold = jnp.float32(threshold)
        self.info = dict(info or {})

    def tree_flatten(self):
        return (self.weight, self.bias, self.threshold), (self.layer, tuple(sorted(self.info.items(), key=str)))

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.weight, obj.bias, obj.threshold = children
        obj.layer, info = aux[0], aux[1]
        obj.info = dict(info)
        return obj

    @property
    def input_dim(self) -> int:
        return int(self.weight.shape[0])

    def check_model(self, config) -> None:
        if self.layer >= config.num_layers:
            raise ValueError(f"gate layer {self.layer} is outside the model's {config.num_layers} blocks")
        if self.input_dim != config.hidden_size:
            raise ValueError(f"gate width {self.input_dim} != model hidden size {config.hidden_size}; "
                             "this gate was fitted on another model")

    def scores(self, states) -> jax.Array:
        """[B] scores of [B, D] last-prompt-token states at `layer` (higher: more benign)."""
        return jnp.asarray(states, jnp.float32) @ self.weight + self.bias

    def opens(self, states) -> np.ndarray:
        """bool [B]: the rows steering may act on."""
        return np.asarray(self.scores(states) > self.threshold)

    def to_metadata(self) -> dict:
        return {"layer": self.layer, "threshold": float(self.threshold), "info": self.info}

    def params(self) -> dict:
        return {"weight": np.asarray(self.weight), "bias": np.asarray(self.bias)}

    @classmethod
    def from_saved(cls, metadata: dict, params: dict) -> "PromptGate":
        return cls(metadata["layer"], params["weight"], float(params["bias"]),
                   float(metadata["threshold"]), metadata.get("info"))


def prompt_states(pre, ids, mask, layer: int, prefix=None) -> np.ndarray:
    """[B, D] float32: the input of block `layer` at the last prompt token of a left-padded batch,
    unsteered; `prefix`: the `models.SharedPrefix` the rows continue, if any."""
    import models
    return np.asarray(models.block_input_at_last(pre, ids, mask, layer, prefix))
