"""Energy-Driven Steering as an intervention on the transformer's residual stream.

Before block l (for each steered layer, in increasing order) the newest position's state takes
`num_steps` normalised gradient steps down the layer's energy:

    h <- h - eta * g / (||g||_2 + 1e-8),   g = dE_l/dh   (per row, float32, cast back)

The steered state is what block l sees and what its KV cache stores. The energy returned for each
layer is the energy before the first step.

Optional, off by default (an extension, not upstream's method): an `energy_floor` per layer. A
row takes a step only while its energy is above the floor, so states the EBM already scores as
good (a harmful prompt heading for a refusal, a benign one heading for an answer) are left where
they are, and steering stops once a state reaches the good region.

Optional, off by default: a `window` of forward calls. Call 0 is the prefill (its newest position
is the last prompt token) and chooses token 0; call t feeds back token t-1 and chooses token t.
With `window=W` only calls 0..W-1 steer, so the first W tokens are chosen from steered states.
Whether a model refuses is settled in its first few tokens; later steps mostly cost fluency.
"""
from __future__ import annotations

import copy
from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from eds_jax.core.ebm import EBM
from eds_jax.core.gate import PromptGate
from models.pretrained import check_intervention_layers

_EPS = 1e-8
# how a configured eta is read: a step length, or a fraction of each layer's hidden-state norm
ETA_SCALES = ("absolute", "hidden_norm")


def check_setting(name: str, value, minimum: Optional[float] = None) -> np.ndarray:
    """A float setting, scalar or one per batch row ([B]): finite, and >= minimum if given."""
    array = np.asarray(value, np.float64)
    if array.ndim > 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a number or a non-empty 1-D array (one per row), got "
                         f"{value!r}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (array < minimum).any():
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return array.astype(np.float32)


def per_row_count(settings) -> Optional[int]:
    """The row count shared by the per-row ([B]) settings among `settings`, or None if all scalar."""
    counts = {int(s.shape[0]) for s in settings if np.ndim(s) == 1}
    if len(counts) > 1:
        raise ValueError(f"per-row settings disagree on the batch size: {sorted(counts)}")
    return counts.pop() if counts else None


def per_layer_setting(name: str, value, layers, minimum: Optional[float] = None) -> dict:
    """{layer: float32 setting} from one value for every layer or a {layer: value} mapping that
    covers exactly `layers`; each value checked by `check_setting`. One value per row is an
    array ([B]); a Python list is refused, since it could mean one value per layer."""
    for v in (value.values() if isinstance(value, Mapping) else (value,)):
        if isinstance(v, (list, tuple)):
            raise ValueError(f"{name}={value!r}: a list is ambiguous; give {{layer: {name}}} for one "
                             f"value per layer, or a numpy array [B] for one value per batch row")
    values = dict(value) if isinstance(value, Mapping) else {layer: value for layer in layers}
    if set(values) != set(layers):
        raise ValueError(f"per-layer {name} covers layers {sorted(values)}, but EBMs are for {layers}")
    return {layer: jnp.asarray(check_setting(f"{name} for layer {layer}", values[layer], minimum),
                               jnp.float32) for layer in layers}


def check_eta_scale(scale: str) -> str:
    if scale not in ETA_SCALES:
        raise ValueError(f"eta_scale must be one of {ETA_SCALES}, got {scale!r}")
    return scale


def scaled_eta(eta, scale: str, hidden_norms: Optional[Mapping[int, float]] = None):
    """The eta to give `Steering`: `eta` itself when `scale` is "absolute"; for "hidden_norm",
    {layer: eta * hidden_norms[layer]} (eta a fraction, scalar or per row), so a step moves each
    layer's state by the same fraction of its typical norm."""
    if check_eta_scale(scale) == "absolute":
        return eta
    if not hidden_norms:
        raise ValueError("eta_scale 'hidden_norm' needs each steered layer's hidden-state norm")
    return {int(layer): np.asarray(eta, np.float64) * float(norm)
            for layer, norm in hidden_norms.items()}


def median_hidden_norms(activations, layers) -> dict[int, float]:
    """{layer: the median L2 norm of the states at that layer} of [N, L, D] activations: the unit
    of `eta_scale="hidden_norm"` and of the vector baselines' coefficients."""
    return {int(layer): float(np.median(np.linalg.norm(np.asarray(activations[:, layer], np.float32),
                                                       axis=-1))) for layer in layers}


def check_opened(opened, rows: Optional[int]) -> np.ndarray:
    """A gate's decision as bool [B], checked against the `rows` per-row settings fix (or None)."""
    opened = np.asarray(opened, bool)
    if opened.ndim != 1 or (rows is not None and opened.shape[0] != rows):
        raise ValueError(f"opened must be one bool per batch row ({rows or 'B'}), got shape {opened.shape}")
    return opened


def take_per_row(setting, rows):
    return setting[jnp.asarray(rows)] if np.ndim(setting) == 1 else setting


def row_column(setting):
    """A scalar, or a per-row [B] setting as [B, 1] so it broadcasts over the hidden size."""
    return setting[:, None] if np.ndim(setting) == 1 else setting


def _unit(g):
    return g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + _EPS)


@jax.tree_util.register_pytree_node_class
class Steering:
    """EBMs per layer plus step settings; a pytree whose layer set and step count are static.

    ebms: {layer: EBM}. eta: one step size, an array [B] (one per batch row: K settings of a
      sweep run as one batch through one compile), or {layer: either}. num_steps: steps per call.
    dropout_at_inference: upstream's behaviour (EBM in train mode while steering), seeded by
      `dropout_seed`; off by default so steering is deterministic.
    true_refusal_ebms / ortho_lambda: upstream's optional "true refusal" EBM: the false-refusal
      step is orthogonalised against the TR gradient, then `+ ortho_lambda * eta * g_TR` is added.
    energy_floor: None (always step, upstream), or one energy / an array [B] / {layer: either}: a
      row steps only while its energy at that layer is above the floor.
    window: None (steer at every forward call, upstream) or W >= 1: steer only the forward calls
      that choose the first W tokens (the prefill and W - 1 decode steps).
    gate: None (every row steps), or a `PromptGate`: `steered_generate` reads it once on the
      unsteered prompt and only the rows it opens step (`open_rows`).
    """

    def __init__(self, ebms: Mapping[int, EBM], eta: Union[float, Mapping[int, float]] = 0.1,
                 num_steps: int = 3, dropout_at_inference: bool = False, dropout_seed: int = 0,
                 true_refusal_ebms: Optional[Mapping[int, EBM]] = None, ortho_lambda: float = 0.0,
                 record_energy_after: bool = False,
                 energy_floor: Union[None, float, Mapping[int, float]] = None,
                 window: Optional[int] = None, gate: Optional[PromptGate] = None):
        if not ebms:
            raise ValueError("Steering needs at least one EBM ({layer: EBM})")
        layers = sorted(int(layer) for layer in ebms)
        if any(layer < 0 for layer in layers):
            raise ValueError(f"steered layers must be >= 0, got {layers}")
        etas = per_layer_setting("eta", eta, layers, minimum=0.0)
        floors = (None if energy_floor is None else
                  per_layer_setting("energy_floor", energy_floor, layers))
        check_setting("ortho_lambda", ortho_lambda)
        if int(num_steps) < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if gate is not None and not isinstance(gate, PromptGate):
            raise ValueError(f"gate must be a PromptGate or None, got {type(gate).__name__}")
        if window is not None and (isinstance(window, bool) or int(window) != window or window < 1):
            raise ValueError(f"window must be None or a whole number of forward calls >= 1, got {window!r}")
        widths = {layer: ebms[layer].spec.input_dim for layer in layers}
        if len(set(widths.values())) > 1:
            raise ValueError(f"EBM input widths differ across layers: {widths}")
        tr = dict(true_refusal_ebms or {})
        if tr and set(tr) != set(layers):
            raise ValueError(f"true-refusal EBMs cover layers {sorted(tr)}, but EBMs are for {layers}")
        self.ebms = {layer: ebms[layer] for layer in layers}
        self.etas = etas
        self.energy_floors = floors
        self.true_refusal_ebms = {layer: tr[layer] for layer in layers} if tr else None
        self.ortho_lambda = jnp.float32(ortho_lambda)
        self.num_steps = int(num_steps)
        self.dropout_at_inference = bool(dropout_at_inference)
        self.dropout_key = jax.random.PRNGKey(dropout_seed)
        self.record_energy_after = bool(record_energy_after)
        self.window = None if window is None else int(window)
        self.active = jnp.float32(1.0)  # 0 outside the window (set per call by `at_call`)
        self.gate = gate

    # -- pytree -------------------------------------------------------------------------------
    def tree_flatten(self):
        children = (self.ebms, self.etas, self.true_refusal_ebms, self.ortho_lambda, self.dropout_key,
                    self.energy_floors, self.active, self.gate)
        return children, (self.num_steps, self.dropout_at_inference, self.record_energy_after,
                          self.window)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        (obj.ebms, obj.etas, obj.true_refusal_ebms, obj.ortho_lambda, obj.dropout_key,
         obj.energy_floors, obj.active, obj.gate) = children
        obj.num_steps, obj.dropout_at_inference, obj.record_energy_after, obj.window = aux
        return obj

    # -- intervention -------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.ebms)

    @property
    def input_dim(self) -> int:
        return next(iter(self.ebms.values())).spec.input_dim

    def check_model(self, config) -> None:
        """Raise a clear error when these EBMs cannot steer a model with `config`."""
        check_intervention_layers(self.layers, config)
        if self.input_dim != config.hidden_size:
            raise ValueError(f"EBM input width {self.input_dim} != model hidden size "
                             f"{config.hidden_size}; these EBMs were trained on another model")
        if self.gate is not None:
            self.gate.check_model(config)

    @property
    def batch_rows(self) -> Optional[int]:
        """The batch size per-row settings fix, or None when every setting is one scalar."""
        return per_row_count(list(self.etas.values()) + list((self.energy_floors or {}).values()))

    def take_rows(self, rows) -> "Steering":
        """The same steering for the batch rows `rows` (indices into the per-row settings)."""
        if self.batch_rows is None:
            return self
        taken = copy.copy(self)
        taken.etas = {layer: take_per_row(eta, rows) for layer, eta in self.etas.items()}
        if self.energy_floors is not None:
            taken.energy_floors = {layer: take_per_row(f, rows) for layer, f in self.energy_floors.items()}
        return taken

    def open_rows(self, opened) -> "Steering":
        """The same steering, ungated, where only the rows with `opened` [B] True step (the others'
        eta is 0 at every layer, so they decode exactly as unsteered)."""
        mask = jnp.asarray(check_opened(opened, self.batch_rows), jnp.float32)
        gated = copy.copy(self)
        gated.etas = {layer: eta * mask for layer, eta in self.etas.items()}
        gated.gate = None
        return gated

    def prefix_intervention(self) -> None:
        """Nothing over a shared prompt prefix: EDS moves only the newest position (the last
        prompt token at prefill), which is never in the prefix."""
        return None

    def at_call(self, call_index) -> "Steering":
        """The steering for forward call `call_index` (0: prefill): a dropout key unique to the
        call, and no step outside the window."""
        if not self.dropout_at_inference and self.window is None:
            return self
        steered = copy.copy(self)
        if self.dropout_at_inference:
            steered.dropout_key = jax.random.fold_in(self.dropout_key, call_index)
        if self.window is not None:
            steered.active = jnp.where(call_index < self.window, 1.0, 0.0).astype(jnp.float32)
        return steered

    def __call__(self, layer: int, hidden: jax.Array):
        """Steer the newest position of `hidden` [B, T, D].

        Returns (hidden, energies [B, 2]): the energy before the first step and after the last
        (NaN unless `record_energy_after`).
        """
        ebm, eta = self.ebms[layer], row_column(self.etas[layer]) * self.active
        floor = None if self.energy_floors is None else self.energy_floors[layer]
        tr_ebm = self.true_refusal_ebms[layer] if self.true_refusal_ebms else None
        layer_key = jax.random.fold_in(self.dropout_key, layer)

        def energy_and_grad(model: EBM, x, key):
            rng = key if self.dropout_at_inference else None
            energies, pullback = jax.vjp(lambda h: model.energy(h, rng), x)
            return energies, pullback(jnp.ones_like(energies))[0]

        def step(x, step_index):
            key = jax.random.fold_in(layer_key, step_index)
            energies, g = energy_and_grad(ebm, x, key)
            direction = _unit(g)
            if tr_ebm is not None:
                _, g_tr = energy_and_grad(tr_ebm, x, jax.random.fold_in(key, 1))
                tr_dir = _unit(g_tr)
                direction = direction - jnp.sum(direction * tr_dir, -1, keepdims=True) * tr_dir
                direction = direction - self.ortho_lambda * tr_dir
            if floor is not None:  # rows at or below the floor stay put
                direction = direction * (energies > floor)[:, None].astype(direction.dtype)
            return x - eta * direction, energies

        x = hidden[:, -1].astype(jnp.float32)
        if self.num_steps == 0:
            energy = ebm.energy(x)
            return hidden, jnp.stack([energy, energy], axis=-1)
        steered, energies = jax.lax.scan(step, x, jnp.arange(self.num_steps))
        steered = steered.astype(hidden.dtype)
        after = (ebm.energy(steered.astype(jnp.float32)) if self.record_energy_after
                 else jnp.full_like(energies[0], jnp.nan))
        return hidden.at[:, -1].set(steered), jnp.stack([energies[0], after], axis=-1)
