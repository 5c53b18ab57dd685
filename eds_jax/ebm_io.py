"""Save and load a set of per-layer EBMs with orbax-checkpoint.

A directory holds `params` (one subtree per layer) and `metadata` (JSON: the spec of each layer's
EBM plus whatever the trainer records: model, validation AUC, sign accuracy, eta/steps defaults).
orbax writes into a temporary directory and renames it, so a crash leaves nothing half-written.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np

from eds_jax.ebm import EBM, EBMSpec, check_params

_FORMAT = "eds_jax.ebms/1"


def _checkpointer():
    import orbax.checkpoint as ocp
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler()), ocp


def save_ebms(directory: str, ebms: Mapping[int, EBM], metadata: Mapping[str, Any] | None = None,
              overwrite: bool = False) -> str:
    """Write `ebms` ({layer: EBM}) and JSON-serialisable `metadata` to `directory`."""
    if not ebms:
        raise ValueError("save_ebms needs at least one EBM")
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    meta = dict(metadata or {})
    meta["format"] = _FORMAT
    meta["layers"] = {str(layer): ebm.spec.to_dict() for layer, ebm in sorted(ebms.items())}
    params = {str(layer): jax.tree_util.tree_map(np.asarray, ebm.params)
              for layer, ebm in sorted(ebms.items())}
    checkpointer, ocp = _checkpointer()
    checkpointer.save(directory, ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                    metadata=ocp.args.JsonSave(meta)), force=overwrite)
    return directory


def load_ebms(directory: str) -> tuple[dict[int, EBM], dict[str, Any]]:
    """Read what `save_ebms` wrote: ({layer: EBM}, metadata). Missing/corrupt -> clear error."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"EBM directory {directory!r} does not exist")
    checkpointer, ocp = _checkpointer()
    try:
        meta = checkpointer.restore(directory, ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
        specs = {int(layer): EBMSpec.from_dict(d) for layer, d in meta["layers"].items()}
        template = {str(layer): _abstract_params(spec) for layer, spec in specs.items()}
        params = checkpointer.restore(
            directory, ocp.args.Composite(params=ocp.args.StandardRestore(template)))["params"]
    except (KeyError, ValueError, OSError, TypeError) as err:
        raise ValueError(f"{directory} is not a readable EBM checkpoint: {err}") from err
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{directory}: format {meta.get('format')!r}, expected {_FORMAT!r}")
    for layer in specs:
        check_params(params[str(layer)], f"{directory}, layer {layer}")
    return {layer: EBM(params=params[str(layer)], spec=spec) for layer, spec in specs.items()}, meta


def _abstract_params(spec: EBMSpec):
    shapes = jax.eval_shape(lambda: EBM.init(spec, jax.random.PRNGKey(0)).params)
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def steering_settings(metadata: dict, eta=None, num_steps=None,
                      layers=None) -> tuple[Union[float, dict], int]:
    """(eta, num_steps): the given values, else the EBM directory's metadata, else 0.1 and 3.
    A saved per-layer eta ({"layer": eta}, from `steer.eta_scale="hidden_norm"`) comes back as
    {layer: eta} for `layers` (default: every saved layer); a given `eta` is one step length for
    every layer."""
    saved = metadata.get("steer", {})
    steps = int(num_steps if num_steps is not None else saved.get("num_steps", 3))
    if eta is not None:
        return float(eta), steps
    eta = saved.get("eta", 0.1)
    if isinstance(eta, dict):
        layers = sorted(int(layer) for layer in eta) if layers is None else layers
        return _saved_per_layer("per-layer eta", eta, layers), steps
    return float(eta), steps


def saved_energy_floor(metadata: dict, layers) -> Optional[dict]:
    """{layer: energy floor} chosen with the EBMs (see `Steering(energy_floor=...)`), or None."""
    floors = (metadata.get("steer") or {}).get("energy_floor")
    if not floors:
        return None
    return _saved_per_layer("energy floor", floors, layers)


def per_layer_floats(value):
    """A setting as metadata JSON holds it: a float, or {layer: value} as {"layer": float};
    None stays None. `_saved_per_layer` reads the dict back."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(layer): float(v) for layer, v in value.items()}
    return float(value)


def _saved_per_layer(what: str, saved: Mapping[str, float], layers) -> dict:
    """{layer: float} for `layers` from a metadata dict keyed by layer strings."""
    missing = [layer for layer in layers if str(layer) not in saved]
    if missing:
        raise ValueError(f"the saved {what} covers layers {sorted(saved)}, not {missing}")
    return {int(layer): float(saved[str(layer)]) for layer in layers}
