"""InfoNCE training of one EBM per layer, all layers in one jitted, sharded step.

Parameters of the per-layer EBMs are stacked on a leading layer axis and the loss is `vmap`ped over
it; Adam is elementwise, so this equals training each layer alone. Batches are sharded on the mesh's
`data` axis, parameters replicated. The training state is checkpointed with orbax every epoch, so a
killed run resumes from the last completed epoch with the same result.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from eds_jax.core.ebm import EBM, EBMSpec
from eds_jax.training.losses import infonce_loss

SELECT_BY = ("auc", "sign_accuracy")
_CHECKPOINTED = ("params", "opt_state", "best_params", "best_score", "best_epoch")


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
    """A (data, model) mesh; data=-1 takes every device not used by `model`."""
    devices = list(devices if devices is not None else jax.devices())
    if data == -1:
        if len(devices) % model:
            raise ValueError(f"{len(devices)} devices do not split into model={model}")
        data = len(devices) // model
    if data * model > len(devices) or data < 1 or model < 1:
        raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices, "
                         f"have {len(devices)}")
    return Mesh(np.array(devices[:data * model]).reshape(data, model), ("data", "model"))


def split_indices(labels: np.ndarray, val_fraction: float, seed: int, groups=None):
    """Stratified train/validation split: each class keeps `val_fraction` for validation.

    groups: a key per row (e.g. its prompt); a group's rows, which must share a label, fall on one
    side together, so validation rows never come from a prompt seen in training. Groups are split
    as rows are (one row per group: the same split as without groups).
    """
    labels = np.asarray(labels)
    if groups is not None:
        keys, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        if (labels != labels[first][inverse]).any():
            bad = keys[np.flatnonzero(np.bincount(inverse, labels != labels[first][inverse]))[0]]
            raise ValueError(f"group {bad.item()!r} holds rows of both labels; a group's rows must share one")
        train, val = split_indices(labels[first], val_fraction, seed)
        return (np.flatnonzero(np.isin(inverse, train)), np.flatnonzero(np.isin(inverse, val)))
    rng = np.random.RandomState(seed)
    train, val = [], []
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) - n_val < 1 or (val_fraction > 0 and n_val < 1):
            raise ValueError(f"class {'good' if cls else 'bad'} has {len(idx)} examples: too few to "
                             f"split with val_fraction={val_fraction}")
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def validation_metrics(energy_pos: np.ndarray, energy_neg: np.ndarray, temperature: float) -> dict:
    """Per layer ([L, P], [L, N]): InfoNCE loss, sign accuracy (upstream) and AUC P(E(p) < E(n))."""
    pos, neg = np.asarray(energy_pos, np.float64), np.asarray(energy_neg, np.float64)
    # float32 rounding differs with a row's place in a batch: closer than that is a tie
    tolerance = 1e-6 * (1 + np.abs(pos).max(axis=1) + np.abs(neg).max(axis=1))
    auc = np.array([_auc(p, n, tol) for p, n, tol in zip(pos, neg, tolerance)])
    sign = 0.5 * (np.mean(pos < 0, axis=1) + np.mean(neg > 0, axis=1))
    loss = np.array([float(infonce_loss(p, n, temperature)) for p, n in zip(pos, neg)])
    return {"loss": loss, "auc": auc, "sign_accuracy": sign}


def _auc(pos: np.ndarray, neg: np.ndarray, tolerance: float) -> float:
    """P(E(p) < E(n)), ties (|E(p) - E(n)| <= tolerance) counted half: by sorting the negatives,
    O((P + N) log N), not the P x N pairs (seconds an epoch with generated states)."""
    neg = np.sort(neg)
    upper = np.searchsorted(neg, pos + tolerance, side="right")  # negatives <= p + tolerance
    lower = np.searchsorted(neg, pos - tolerance, side="left")  # negatives < p - tolerance
    above, ties = len(neg) - upper, upper - lower
    return float((above.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


@dataclasses.dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    temperature: float
    seed: int
    select_by: str = "auc"

    def __post_init__(self):
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by={self.select_by!r}; expected one of {SELECT_BY}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"train.{name}={value!r}: expected a whole number >= 1")
        for name in ("learning_rate", "temperature"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"train.{name}={value!r}: expected a finite number > 0")


class LayerwiseTrainer:
    """Trains `n_layers` EBMs of one spec together on [N, L, D] activations."""

    def __init__(self, spec: EBMSpec, n_layers: int, config: TrainConfig, mesh: Mesh):
        if config.batch_size % mesh.shape["data"]:
            raise ValueError(f"train.batch_size={config.batch_size} is not divisible by the mesh's "
                             f"data axis ({mesh.shape['data']})")
        self.spec, self.n_layers, self.config, self.mesh = spec, n_layers, config, mesh
        self.optimizer = optax.adam(config.learning_rate)
        module = spec.module()
        replicated = NamedSharding(mesh, P())
        batch_sharding = NamedSharding(mesh, P("data", None, None))
        self.batch_sharding, self.replicated = batch_sharding, replicated

        def layer_loss(params, pos, neg, key):
            kp, kn = jax.random.split(key)
            e_pos = module.apply({"params": params}, pos, deterministic=False, rngs={"dropout": kp})
            e_neg = module.apply({"params": params}, neg, deterministic=False, rngs={"dropout": kn})
            return infonce_loss(e_pos, e_neg, config.temperature)

        def step(params, opt_state, pos, neg, key):
            keys = jax.random.split(key, n_layers)
            def total(p):
                losses = jax.vmap(layer_loss)(p, pos.swapaxes(0, 1), neg.swapaxes(0, 1), keys)
                return losses.sum(), losses
            (_, losses), grads = jax.value_and_grad(total, has_aux=True)(params)
            # InfoNCE is blind to the energy's offset: the output bias's true gradient is 0, and
            # Adam would turn rounding noise into lr-sized steps that differ with the mesh
            grads["out"]["bias"] = jnp.zeros_like(grads["out"]["bias"])
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, losses

        self._step = jax.jit(step, in_shardings=(replicated, replicated, batch_sharding,
                                                 batch_sharding, replicated),
                             out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1))
        self._energies = jax.jit(
            lambda params, x: jax.vmap(lambda p, h: module.apply({"params": p}, h))(params, x.swapaxes(0, 1)),
            in_shardings=(replicated, NamedSharding(mesh, P(None, None, None))), out_shardings=replicated)

    def init_state(self) -> dict:
        keys = jax.random.split(jax.random.PRNGKey(self.config.seed), self.n_layers)
        params = jax.vmap(lambda k: EBM.init(self.spec, k).params)(keys)
        params = jax.jit(lambda p: p, out_shardings=self.replicated)(params)
        best = jax.tree_util.tree_map(jnp.copy, params)  # params are donated to the step
        return {"params": params, "opt_state": self.optimizer.init(params), "best_params": best,
                "best_score": np.full(self.n_layers, -np.inf), "best_epoch": np.full(self.n_layers, -1),
                "epoch": 0}

    def energies(self, params, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._energies(params, jnp.asarray(x, jnp.float32)))  # [L, N]

    def run_epoch(self, state: dict, pos: np.ndarray, neg: np.ndarray) -> tuple[dict, np.ndarray]:
        """One pass over the positives in batches of `batch_size`, negatives drawn cyclically."""
        cfg, epoch = self.config, state["epoch"]
        rng = np.random.RandomState([cfg.seed, epoch])
        pos_order = rng.permutation(len(pos))
        neg_order = np.concatenate([rng.permutation(len(neg))
                                    for _ in range(-(-len(pos) // len(neg)) + 1)])
        steps = max(1, -(-len(pos) // cfg.batch_size))
        pos_order = np.resize(pos_order, steps * cfg.batch_size)
        neg_order = np.resize(neg_order, steps * cfg.batch_size)
        params, opt_state = state["params"], state["opt_state"]
        epoch_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), epoch)
        losses = []
        for s in range(steps):
            batch = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
            pb = self._global_batch(pos[pos_order[batch]])
            nb = self._global_batch(neg[neg_order[batch]])
            params, opt_state, loss = self._step(params, opt_state, pb, nb, jax.random.fold_in(epoch_key, s))
            losses.append(np.asarray(loss))
        return dict(state, params=params, opt_state=opt_state), np.mean(losses, axis=0)

    def _global_batch(self, host_batch: np.ndarray) -> jax.Array:
        """Each process places only the shards its own devices hold (multi-host safe)."""
        return jax.make_array_from_callback(host_batch.shape, self.batch_sharding,
                                            lambda index: host_batch[index])

    def update_best(self, state: dict, scores: np.ndarray) -> dict:
        improved = scores > state["best_score"]
        keep = jnp.asarray(improved)
        best = jax.tree_util.tree_map(
            lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            state["params"], state["best_params"])
        return dict(state, best_params=best, best_score=np.where(improved, scores, state["best_score"]),
                    best_epoch=np.where(improved, state["epoch"], state["best_epoch"]))

    def layer_ebm(self, params, index: int) -> EBM:
        return EBM(params=jax.tree_util.tree_map(lambda x: np.asarray(x[index]), params), spec=self.spec)


class TrainCheckpoints:
    """orbax CheckpointManager over the training state, one step per completed epoch."""

    def __init__(self, directory: str):
        import orbax.checkpoint as ocp
        self.ocp = ocp
        self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                             options=ocp.CheckpointManagerOptions(max_to_keep=2))

    def save(self, state: dict, history: list) -> None:
        arrays = {k: state[k] for k in _CHECKPOINTED}
        self.manager.save(state["epoch"], args=self.ocp.args.Composite(
            state=self.ocp.args.StandardSave(arrays), history=self.ocp.args.JsonSave(history)))
        self.manager.wait_until_finished()

    def restore_latest(self, template: dict) -> Optional[tuple[dict, list]]:
        step = self.manager.latest_step()
        if step is None:
            return None
        arrays = {k: template[k] for k in _CHECKPOINTED}
        restored = self.manager.restore(step, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardRestore(arrays), history=self.ocp.args.JsonRestore()))
        state = dict(template, **restored["state"], epoch=step)
        state["best_score"] = np.asarray(state["best_score"])
        state["best_epoch"] = np.asarray(state["best_epoch"])
        return state, list(restored["history"])


def check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise ValueError(f"config.train.val_fraction={val_fraction!r}: expected a fraction in (0, 1)")


def check_checkpoint_every_s(seconds: float) -> None:
    if not seconds >= 0:
        raise ValueError(f"config.train.checkpoint_every_s={seconds!r}: expected seconds >= 0 "
                         "(0: a checkpoint after every epoch)")


def checkpoint_key(activations: np.ndarray, labels: np.ndarray, layers, spec: EBMSpec,
                   config: TrainConfig, val_fraction: float, groups=None) -> str:
    """A digest of everything that decides the training trajectory."""
    digest = hashlib.sha256()
    arrays = (activations, labels) + (() if groups is None else (np.asarray(groups),))
    for array in map(np.ascontiguousarray, arrays):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({"layers": [int(l) for l in layers], "spec": spec.to_dict(),
                              "train": dataclasses.asdict(config), "val_fraction": float(val_fraction)},
                             sort_keys=True).encode())
    return digest.hexdigest()[:16]


def train_layers(activations: np.ndarray, labels: np.ndarray, layers: list[int], spec: EBMSpec,
                 config: TrainConfig, val_fraction: float, mesh: Mesh, workdir: str,
                 log=print, checkpoint_every_s: float = 30.0, groups=None) -> dict[str, Any]:
    """Train EBMs for `layers` on [N, L, D] activations; resume from `workdir` if a run was killed.

    groups: a key per row (its prompt, when a prompt gives several states); the validation split
    is by group (see `split_indices`).

    A checkpoint is written after an epoch once `checkpoint_every_s` seconds have passed since the
    last one (0: after every epoch), and always after the last epoch: on fast epochs (a second each
    on the embedded default) writing every one cost a fifth of the training time. Where a run
    resumes does not change its result: each epoch's batches and dropout follow from its number.

    Returns the best-epoch params per layer, per-layer validation metrics of the best epoch, the
    per-epoch history, and the validation energies (for plots).
    """
    check_val_fraction(val_fraction)
    check_checkpoint_every_s(checkpoint_every_s)
    train_idx, val_idx = split_indices(labels, val_fraction, config.seed, groups)
    x = activations[:, layers].astype(np.float32)
    pos = x[train_idx][labels[train_idx] == 1]
    neg = x[train_idx][labels[train_idx] == 0]
    val_pos = x[val_idx][labels[val_idx] == 1]
    val_neg = x[val_idx][labels[val_idx] == 0]
    trainer = LayerwiseTrainer(spec, len(layers), config, mesh)
    # checkpoints belong to the data and settings that produced them: another collection, EBM
    # spec or training config starts afresh in its own folder, never from another run's state
    key = checkpoint_key(activations, labels, layers, spec, config, val_fraction, groups)
    checkpoints = TrainCheckpoints(os.path.join(workdir, "checkpoints", key))
    state = trainer.init_state()
    history: list = []
    resumed = checkpoints.restore_latest(state)
    if resumed is not None:
        state, history = resumed
        log(f"resumed from epoch {state['epoch']}")
    from tqdm.auto import trange
    saved_at = time.monotonic()
    for epoch in trange(state["epoch"], config.epochs, desc="train", unit="epoch",
                        initial=state["epoch"], total=config.epochs):
        state, train_loss = trainer.run_epoch(state, pos, neg)
        bad = [layer for layer, loss in zip(layers, np.asarray(train_loss)) if not np.isfinite(loss)]
        if bad:
            raise FloatingPointError(f"training loss is not finite at epoch {epoch + 1}, layers {bad} "
                                     f"(learning rate {config.learning_rate}); nothing was saved")
        metrics = validation_metrics(trainer.energies(state["params"], val_pos),
                                     trainer.energies(state["params"], val_neg), config.temperature)
        state = trainer.update_best(state, metrics[config.select_by])
        history += [{"epoch": epoch + 1, "layer": layer, "train_loss": float(train_loss[i]),
                     "val_loss": float(metrics["loss"][i]), "val_auc": float(metrics["auc"][i]),
                     "val_sign_accuracy": float(metrics["sign_accuracy"][i])}
                    for i, layer in enumerate(layers)]
        state["epoch"] = epoch + 1
        if epoch + 1 == config.epochs or time.monotonic() - saved_at >= checkpoint_every_s:
            checkpoints.save(state, history)
            saved_at = time.monotonic()
    val_energies = (trainer.energies(state["best_params"], val_pos),
                    trainer.energies(state["best_params"], val_neg))
    return {"trainer": trainer, "params": state["best_params"], "best_epoch": state["best_epoch"] + 1,
            "metrics": validation_metrics(*val_energies, config.temperature), "history": history,
            "val_energies": val_energies,
            "counts": {"train_good": len(pos), "train_bad": len(neg), "val_good": len(val_pos),
                       "val_bad": len(val_neg)}}

