"""The saved-steering format: EBMs, the steering settings chosen with them, and their deployment.

One directory (orbax) holds `params` (one subtree per layer) and `metadata` (JSON). This module is
the only writer and reader of that metadata:

  format          "eds_jax.ebms", version  the schema below; an older or newer version is refused
  layers          {layer: EBMSpec}          the architecture of each saved EBM
  params_sha256   a digest of every parameter, checked on load (a changed file is an error)
  steering        `SteeringSettings`        layers, per-layer eta, steps, energy floor, how chosen
  system          str | null                the deployment's system prompt the EBMs belong to
  model           {source, family, hidden_size, num_layers}
  judge           `HelpfulnessJudge` fields, or null (the judge the settings were chosen with)
  sweep           the validation table and choice, or null (nothing was swept)
  training        free-form facts about training (label counts, validation AUC, config)
  gate            optional: the prompt gate's block, threshold and how it was fitted (its weight
                  and bias are in `params["gate"]`, under the digest); absent or null: no gate

`save_ebms` / `load_ebms` are the low-level pair (parameters + digest + a metadata dict).
`save_steering` writes a whole training result; `load_steering(directory)` is the one call that
gives back a ready `Steering` (or None when training kept the model unsteered), the system prompt
and everything else, with explicit overrides. orbax writes into a temporary directory and renames
it, so a crash leaves nothing half-written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np

from eds_jax.core.deployment import resolve_system
from eds_jax.core.ebm import EBM, EBMSpec, check_params
from eds_jax.core.gate import PromptGate
from eds_jax.core.steering import ETA_SCALES, Steering

FORMAT = "eds_jax.ebms"
VERSION = 2
# fields a version-2 metadata must hold (None is a valid value for the nullable ones)
REQUIRED = ("format", "version", "layers", "params_sha256", "steering", "system", "model", "judge",
            "sweep", "training")


class SavedSteeringError(ValueError):
    """An EBM directory that is missing, corrupt, from another version, or changed after saving."""


def _checkpointer():
    import orbax.checkpoint as ocp
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler()), ocp


def params_digest(params_by_layer: Mapping[str, Any]) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for path, leaf in sorted(((jax.tree_util.keystr(p), np.asarray(v)) for p, v in
                              jax.tree_util.tree_leaves_with_path(dict(params_by_layer))),
                             key=lambda item: item[0]):
        digest.update(f"{path}|{leaf.dtype}|{leaf.shape}|".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


GATE = "gate"  # the params subtree of the prompt gate


def save_ebms(directory: str, ebms: Mapping[int, EBM], metadata: Mapping[str, Any] | None = None,
              overwrite: bool = False, gate: Optional[PromptGate] = None) -> str:
    """Write `ebms` ({layer: EBM}), the optional prompt `gate` and JSON-serialisable `metadata` to
    `directory`, with the format version and a digest of the parameters."""
    if not ebms:
        raise ValueError("save_ebms needs at least one EBM")
    if gate is not None and not isinstance(gate, PromptGate):
        raise ValueError(f"gate must be a PromptGate or None, got {type(gate).__name__}")
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"{directory} exists; pass overwrite=True to replace it")
    params = {str(layer): jax.tree_util.tree_map(np.asarray, ebm.params)
              for layer, ebm in sorted(ebms.items())}
    if gate is not None:
        params[GATE] = gate.params()
    meta = dict(metadata or {}) | {"gate": None if gate is None else gate.to_metadata()} | {
        "format": FORMAT, "version": VERSION, "params_sha256": params_digest(params),
        "layers": {str(layer): ebm.spec.to_dict() for layer, ebm in sorted(ebms.items())}}
    checkpointer, ocp = _checkpointer()
    checkpointer.save(directory, ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                    metadata=ocp.args.JsonSave(meta)), force=overwrite)
    return directory


def read_metadata(directory: str) -> dict:
    """The metadata of an EBM directory, its format and version checked; no parameters read (so a
    command line can check settings before it loads a model)."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"EBM directory {directory!r} does not exist")
    checkpointer, ocp = _checkpointer()
    try:
        meta = checkpointer.restore(directory, ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"]
    except Exception as err:  # orbax raises many kinds for a directory that is not its checkpoint
        raise SavedSteeringError(f"{directory} is not a readable EBM checkpoint "
                                 f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, f"{FORMAT}/1"):
        raise SavedSteeringError(f"{directory}: metadata format {meta.get('format') if isinstance(meta, dict) else meta!r}"
                                 f" is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise SavedSteeringError(f"{directory}: saved-steering version {meta.get('version', 1)!r}, this "
                                 f"eds-jax reads version {VERSION}; retrain with train_ebm.py")
    return meta


def load_ebms(directory: str) -> tuple[dict[int, EBM], dict[str, Any]]:
    """Read what `save_ebms` wrote: ({layer: EBM}, metadata). A missing, corrupt or changed
    directory is a `SavedSteeringError` naming it."""
    ebms, _, meta = load_ebms_and_gate(directory)
    return ebms, meta


def load_ebms_and_gate(directory: str) -> tuple[dict[int, EBM], Optional[PromptGate], dict[str, Any]]:
    """`load_ebms` and the prompt gate saved beside the EBMs (None if there is none)."""
    directory = os.path.abspath(directory)
    meta = read_metadata(directory)
    try:
        specs = {int(layer): EBMSpec.from_dict(d) for layer, d in meta["layers"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SavedSteeringError(f"{directory}: metadata field 'layers' is malformed: {err}") from None
    template = {str(layer): _abstract_params(spec) for layer, spec in specs.items()}
    gate_meta = meta.get("gate")
    if gate_meta is not None:
        if (not isinstance(gate_meta, Mapping) or not isinstance(gate_meta.get("layer"), int)
                or not isinstance(gate_meta.get("threshold"), (int, float))):
            raise SavedSteeringError(f"{directory}: 'gate' is {gate_meta!r}; expected "
                                     "{layer, threshold, info} or null")
        width = next(iter(specs.values())).input_dim
        template[GATE] = {"weight": np.zeros((width,), np.float32), "bias": np.zeros((), np.float32)}
    checkpointer, ocp = _checkpointer()
    try:
        params = checkpointer.restore(
            directory, ocp.args.Composite(params=ocp.args.StandardRestore(template)))["params"]
    except Exception as err:
        raise SavedSteeringError(f"{directory}: the EBM parameters cannot be read as the saved specs say "
                                 f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    for layer, spec in specs.items():
        want = jax.tree_util.tree_map(np.shape, template[str(layer)])
        got = jax.tree_util.tree_map(np.shape, params[str(layer)])
        if want != got:
            raise SavedSteeringError(f"{directory}, layer {layer}: parameter shapes {got} disagree with "
                                     f"the saved spec {spec}")
    # the digest first: any changed byte reads as a changed file, whatever value it happens to make
    if params_digest(params) != meta["params_sha256"]:
        raise SavedSteeringError(f"{directory}: the EBM parameters do not match the digest recorded when "
                                 "they were saved (changed or corrupted files); retrain or restore them")
    for layer in specs:  # saved as they are, but unusable (NaN or overflowing weights)
        check_params(params[str(layer)], f"{directory}, layer {layer}")
    gate = None
    if gate_meta is not None:
        try:
            gate = PromptGate.from_saved(gate_meta, params[GATE])
        except ValueError as err:
            raise SavedSteeringError(f"{directory}: the saved prompt gate is malformed: {err}") from None
    ebms = {layer: EBM(params=params[str(layer)], spec=spec) for layer, spec in specs.items()}
    return ebms, gate, meta


def _abstract_params(spec: EBMSpec):
    shapes = jax.eval_shape(lambda: EBM.init(spec, jax.random.PRNGKey(0)).params)
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


# -- the steering settings ---------------------------------------------------------------------
def _layer_floats(value, what: str, where: str) -> Optional[dict[int, float]]:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise SavedSteeringError(f"{where}: {what} is {value!r}; expected {{layer: number}}")
    out = {}
    for layer, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise SavedSteeringError(f"{where}: {what} for layer {layer} is {v!r}; expected a finite number")
        out[int(layer)] = float(v)
    return out


@dataclasses.dataclass(frozen=True)
class SteeringSettings:
    """How to steer with saved EBMs: what training chose on validation prompts (or configured).

    eta: {layer: step length}; with eta_scale "hidden_norm" it is eta_fraction x hidden_norm[layer].
    energy_floor: {layer: energy} or None (a row steps only while its energy is above the floor).
    unsteered: the validation sweep found no setting that helps; the EBMs are saved, unused.
    """
    layers: tuple[int, ...]
    eta: dict[int, float]
    num_steps: int
    energy_floor: Optional[dict[int, float]] = None
    eta_scale: str = "absolute"
    eta_fraction: Optional[float] = None
    hidden_norm: Optional[dict[int, float]] = None
    energy_floor_quantile: Optional[float] = None
    unsteered: bool = False
    chosen_on_validation: bool = False

    def __post_init__(self):
        where = "steering settings"
        layers = tuple(int(layer) for layer in self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers or sorted(set(layers)) != list(layers):
            raise SavedSteeringError(f"{where}: layers {list(layers)} must be distinct and increasing")
        for name in ("eta", "energy_floor", "hidden_norm"):
            value = _layer_floats(getattr(self, name), name, where)
            if value is not None and sorted(value) != list(layers):
                raise SavedSteeringError(f"{where}: {name} covers layers {sorted(value)}, not {list(layers)}")
            object.__setattr__(self, name, value)
        if self.eta is None or any(v < 0 for v in self.eta.values()):
            raise SavedSteeringError(f"{where}: eta {self.eta} must be >= 0 for every layer")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, (int, np.integer)) \
                or self.num_steps < 0:
            raise SavedSteeringError(f"{where}: num_steps {self.num_steps!r} must be a whole number >= 0")
        if self.eta_scale not in ETA_SCALES:
            raise SavedSteeringError(f"{where}: eta_scale {self.eta_scale!r} is not one of {ETA_SCALES}")
        if self.eta_scale == "hidden_norm" and (self.eta_fraction is None or self.hidden_norm is None):
            raise SavedSteeringError(f"{where}: eta_scale 'hidden_norm' needs eta_fraction and hidden_norm")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("eta", "energy_floor", "hidden_norm"):
            if d[name] is not None:
                d[name] = {str(layer): v for layer, v in d[name].items()}
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d, where: str = "metadata") -> "SteeringSettings":
        if not isinstance(d, Mapping):
            raise SavedSteeringError(f"{where}: 'steering' is {type(d).__name__}; expected an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(d) - fields), sorted(fields - set(d))
        if unknown or missing:
            raise SavedSteeringError(f"{where}: 'steering' has unknown fields {unknown} / lacks {missing}")
        try:
            return cls(**d)
        except SavedSteeringError as err:
            raise SavedSteeringError(f"{where}: {err}") from None
        except (TypeError, ValueError) as err:
            raise SavedSteeringError(f"{where}: 'steering' is malformed: {err}") from None


@dataclasses.dataclass
class SavedSteering:
    """What `load_steering` returns. `steering` is ready for `generate_text` / `steered_generate`
    (None when training kept the model unsteered and no eta was given: `note` says so); decode
    under `system`, the deployment the EBMs were trained under."""
    directory: str
    ebms: dict[int, EBM]
    settings: SteeringSettings
    steering: Optional[Steering]
    system: Optional[str]
    model: dict
    judge: Optional[dict]  # `eds_jax.judging.helpfulness.HelpfulnessJudge.from_dict(judge)`
    sweep: Optional[dict]
    metadata: dict
    note: str = ""
    gate: Optional[PromptGate] = None  # the saved prompt gate (also inside `steering`), or None

    def check_model(self, config) -> None:
        """Raise when the model (a `ModelConfig`) cannot take these EBMs: width or layer range."""
        if self.steering is not None:
            self.steering.check_model(config)
        else:
            Steering(self.ebms).check_model(config)


def save_steering(directory: str, ebms: Mapping[int, EBM], settings: SteeringSettings, *,
                  system: Optional[str], model: Mapping[str, Any], judge: Optional[Mapping] = None,
                  sweep: Optional[Mapping] = None, training: Optional[Mapping] = None,
                  overwrite: bool = False, gate: Optional[PromptGate] = None) -> str:
    """Write EBMs with their settings, prompt gate and deployment (the metadata schema of this
    module)."""
    if sorted(int(layer) for layer in ebms) != list(settings.layers):
        raise ValueError(f"EBMs for layers {sorted(ebms)} but settings for {list(settings.layers)}")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"system must be a string or None, got {type(system).__name__}")
    metadata = {"steering": settings.to_dict(), "system": system, "model": dict(model),
                "judge": None if judge is None else dict(judge),
                "sweep": None if sweep is None else dict(sweep),
                "training": dict(training or {})}
    return save_ebms(directory, ebms, metadata, overwrite=overwrite, gate=gate)


def check_metadata(meta: Mapping[str, Any], directory: str) -> SteeringSettings:
    """Every field of the current version present and well-typed; the settings parsed."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise SavedSteeringError(f"{directory}: metadata lacks {missing} (version {VERSION} requires "
                                 f"{list(REQUIRED)})")
    settings = SteeringSettings.from_dict(meta["steering"], directory)
    if meta["system"] is not None and not isinstance(meta["system"], str):
        raise SavedSteeringError(f"{directory}: 'system' is {type(meta['system']).__name__}; "
                                 "expected a string or null")
    if not isinstance(meta["model"], Mapping) or not isinstance(meta["model"].get("hidden_size"), int):
        raise SavedSteeringError(f"{directory}: 'model' is {meta['model']!r}; expected "
                                 "{source, family, hidden_size, num_layers}")
    saved_layers = sorted(int(layer) for layer in meta["layers"])
    if saved_layers != list(settings.layers):
        raise SavedSteeringError(f"{directory}: EBMs saved for layers {saved_layers}, settings for "
                                 f"{list(settings.layers)}")
    for name in ("judge", "sweep"):
        if meta[name] is not None and not isinstance(meta[name], Mapping):
            raise SavedSteeringError(f"{directory}: {name!r} is {type(meta[name]).__name__}; "
                                     "expected an object or null")
    return settings


def load_steering(directory: str, *, eta: Union[None, float, Mapping[int, float]] = None,
                  num_steps: Optional[int] = None, layers=None,
                  energy_floor: Union[None, bool, Mapping[int, float]] = None,
                  system: Optional[str] = None, dropout_at_inference: bool = False, seed: int = 0,
                  record_energy_after: bool = False, gate: Optional[bool] = None) -> SavedSteering:
    """Load the EBMs in `directory` (train_ebm.py's WORKDIR/ebms) as training chose to steer.

    Overrides (each None = as saved): eta (one step length for every layer, or {layer: eta}),
    num_steps, layers (a subset of the saved layers), energy_floor (False: no floor; a mapping:
    these floors), system (another system prompt than the EBMs' deployment), gate (False: steer
    every row, ignoring a saved prompt gate).
    """
    if gate not in (None, False):
        raise ValueError(f"gate={gate!r}: pass None (as saved) or False (no gate)")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"system must be a string, got {type(system).__name__}")
    system = resolve_system(system)
    ebms, saved_gate, meta = load_ebms_and_gate(directory)
    directory = os.path.abspath(directory)
    settings = check_metadata(meta, directory)
    prompt_gate = None if gate is False else saved_gate
    if layers is not None:
        wanted = [int(layer) for layer in layers]
        missing = [layer for layer in wanted if layer not in ebms]
        if missing or not wanted:
            raise ValueError(f"layers {wanted}: no saved EBM for {missing or 'an empty list'}; "
                             f"saved layers: {sorted(ebms)}")
        ebms = {layer: ebms[layer] for layer in sorted(set(wanted))}
    chosen = sorted(ebms)
    if num_steps is not None and (isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 0):
        raise ValueError(f"num_steps={num_steps!r}: expected a whole number >= 0")
    steps = settings.num_steps if num_steps is None else int(num_steps)
    etas = settings.eta if eta is None else eta  # one number steers every layer alike
    if isinstance(etas, Mapping) and set(chosen) <= set(etas):
        etas = {layer: etas[layer] for layer in chosen}
    if energy_floor is None:
        floor = None if settings.energy_floor is None else {l: settings.energy_floor[l] for l in chosen}
    elif energy_floor is False:
        floor = None
    elif energy_floor is True:
        raise ValueError("energy_floor=True is ambiguous: pass None (as saved), False (none) or {layer: floor}")
    else:
        floor = dict(energy_floor)
    note, steering = "", None
    if settings.unsteered and eta is None:
        note = (f"{directory}: training kept the model unsteered (no setting on the validation "
                "prompts helped); steering is None. Give eta=... to steer anyway.")
    else:
        steering = Steering(ebms, eta=etas, num_steps=steps, energy_floor=floor,
                            dropout_at_inference=dropout_at_inference, dropout_seed=seed,
                            record_energy_after=record_energy_after, gate=prompt_gate)
    return SavedSteering(directory=directory, ebms=ebms, settings=settings, steering=steering,
                         system=meta["system"] if system is None else system, model=dict(meta["model"]),
                         judge=meta["judge"], sweep=meta["sweep"], metadata=meta, note=note,
                         gate=prompt_gate)
