"""Train EDS energy models: collect -> label -> extract -> InfoNCE per layer -> choose layers -> save.

  python train_ebm.py                                   # embedded default: SmolLM2 GGUF, own prompts
  python train_ebm.py --config=configs/llama31_8b_instruct.py --workdir=runs/llama --config.train.epochs=3

Outputs in --workdir: collect/ (responses + activations cache), checkpoints/ (orbax training state,
resumed after a kill), metrics.jsonl, layer_quality.png, energy_histograms.png, and ebms/ (the
chosen layers, read by `steer_decode.py --ebms=WORKDIR/ebms`).
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "smollm2_135m.py")
if __name__ == "__main__":  # before DEFINE_config_file, which applies the overrides at once
    from eds_jax.cli import check_config_overrides
    check_config_overrides(sys.argv, DEFAULT_CONFIG)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "ml_collections config file (configs/*.py)")
flags.DEFINE_string("workdir", "workdir", "output directory")
FLAGS = flags.FLAGS


def resolve_model_source(source: str) -> str:
    import models
    if source == "embedded:smollm2":
        return models.smollm2_gguf_path()
    if not source:
        raise app.UsageError("config.model.source is empty; give --config.model.source=DIR|FILE|HUB_ID")
    return source


def maybe_initialize_distributed(cfg) -> None:
    import jax
    d = cfg.distributed
    if not d.initialize:
        return
    kwargs = {}
    if d.coordinator_address:
        kwargs = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                      process_id=d.process_id)
    jax.distributed.initialize(**kwargs)  # on TPU pods the arguments come from the environment
    logging.info("process %d of %d", jax.process_index(), jax.process_count())


def summary_table(layers, result, chosen) -> str:
    m = result["metrics"]
    lines = ["| layer | val AUC | sign acc | val loss | best epoch | chosen |", "|---|---|---|---|---|---|"]
    for i, layer in enumerate(layers):
        lines.append(f"| {layer} | {m['auc'][i]:.3f} | {m['sign_accuracy'][i]:.3f} | {m['loss'][i]:.4f} | "
                     f"{int(result['best_epoch'][i])} | {'yes' if layer in chosen else ''} |")
    return "\n".join(lines)


def validation_prompts(cfg, training_prompts: set) -> tuple[list[str], list[str]]:
    """The benign and harmful validation prompts of `cfg.sweep` (none when it names no etas);
    read before any work, and checked to share no prompt with training."""
    from eds_jax import collect as collection_lib
    if not cfg.sweep.etas:
        return [], []
    benign = collection_lib.read_sources(cfg.sweep.benign, cfg.data.seed)
    harmful = collection_lib.read_sources(cfg.sweep.harmful, cfg.data.seed)
    shared = sorted(training_prompts & (set(benign) | set(harmful)))
    if shared:
        raise ValueError(f"{len(shared)} validation prompts of config.sweep are also training prompts, "
                         f"e.g. {shared[0]!r}; settings must be chosen on held-out prompts")
    if not benign or not harmful:
        raise ValueError(f"config.sweep needs benign and harmful validation prompts, got {len(benign)} "
                         f"and {len(harmful)}")
    return benign, harmful


def energy_floors(ebms: dict, activations, labels, quantiles) -> dict:
    """{q: {layer: the q-quantile of the energies of the training good states at that layer}}."""
    import numpy as np
    good = activations[np.asarray(labels) == 1]
    energies = {layer: np.asarray(ebm.energy(good[:, layer])) for layer, ebm in ebms.items()}
    return {q: {int(layer): float(np.quantile(e, q)) for layer, e in energies.items()}
            for q in quantiles}


def hidden_norms(activations, layers) -> dict:
    """{layer: the median L2 norm of the training states at that layer} (the unit of
    `steer.eta_scale="hidden_norm"`)."""
    import numpy as np
    return {int(layer): float(np.median(np.linalg.norm(np.asarray(activations[:, layer], np.float32),
                                                       axis=-1))) for layer in layers}


def choose_steering(cfg, pre, ranked: list[int], layer_ebm, validation: tuple[list, list],
                    workdir: str, sharding, data=None) -> dict:
    """Layers, eta, steps and energy floor: swept on the validation prompts of `cfg.sweep` when it
    names etas, else `cfg.steer` as it is. Returns {layers, eta, num_steps, energy_floor, judge,
    sweep} and, when `steer.eta_scale` is "hidden_norm", eta_fraction and hidden_norm; eta is a
    float or {layer: float}. `data` (the training collection) sets the energy floors and norms."""
    import jax
    import eds_jax
    from eds_jax import outcomes, plots
    from eds_jax import sweep as sweep_lib
    from eds_jax.steering import scaled_eta
    from eds_jax.data import write_jsonl

    s = cfg.sweep
    scale = cfg.steer.eta_scale  # checked by run() before anything is written; scaled_eta checks too
    tops = tuple(int(x) for x in s.top_n_layers) or (int(cfg.steer.top_n_layers),)
    norms = hidden_norms(data.activations, ranked[:max(tops)]) if scale == "hidden_norm" else {}

    def eta_for(value, layers):  # the configured eta (or fraction) as Steering's eta
        return scaled_eta(value, scale, {l: norms[l] for l in layers} if norms else None)

    def scale_fields(fraction, layers):  # what metadata says about a scaled eta
        return ({} if not norms else
                {"eta_fraction": fraction, "hidden_norm": {l: norms[l] for l in layers}})

    if not s.etas:
        layers = sorted(ranked[:int(cfg.steer.top_n_layers)])
        return {"layers": layers, "eta": eta_for(float(cfg.steer.eta), layers),
                "num_steps": int(cfg.steer.num_steps), "energy_floor": None, "judge": None,
                "sweep": None} | scale_fields(float(cfg.steer.eta), layers)
    benign, harmful = validation
    steps_list = tuple(int(x) for x in s.num_steps) or (int(cfg.steer.num_steps),)
    ebms = {layer: layer_ebm(layer) for layer in ranked[:max(tops)]}
    swept = "eta" if scale == "absolute" else "eta_fraction"  # the float each group sweeps
    quantiles = [None] + [float(q) for q in s.energy_floor_quantiles]
    floors = (energy_floors(ebms, data.activations, data.labels, quantiles[1:])
              if quantiles[1:] else {})
    groups = [sweep_lib.SettingGroup(
        {"num_steps": steps, "layers": sorted(ranked[:n])} | ({} if q is None else {"energy_floor_quantile": q}),
        swept, tuple(s.etas),
        lambda per_row, steps=steps, n=n, q=q: eds_jax.Steering(
            {l: ebms[l] for l in ranked[:n]}, eta=eta_for(per_row, ranked[:n]), num_steps=steps,
            energy_floor=None if q is None else {l: floors[q][l] for l in ranked[:n]}))
        for q in quantiles for steps in steps_list for n in tops]
    options = dict(system=cfg.collect.system, max_new_tokens=int(s.max_new_tokens),
                   batch_size=int(s.batch_size))
    unsteered = eds_jax.generate_text(pre, benign + harmful, progress=True, batch_sharding=sharding,
                                      **options)
    judge = outcomes.calibrated_judge(pre, benign + harmful, unsteered, cfg.collect.judge,
                                      s.fluency_quantile, s.fluency_margin, int(s.batch_size))
    table, responses = sweep_lib.run_sweep(pre, benign, harmful, groups, judge, baseline=unsteered,
                                           **options)
    row, reason = sweep_lib.choose_setting(table, sweep_lib.Tolerances(s.max_refusal_drop,
                                                                       s.max_incoherence_rise))
    logging.info("sweep: %s", reason)
    if jax.process_index() == 0:
        write_jsonl(os.path.join(workdir, "sweep_responses.jsonl"),
                    ({"setting": label, "kind": kind, "prompt": p, "response": r}
                     for label, texts in responses.items()
                     for p, kind, r in zip(benign + harmful,
                                           ["benign"] * len(benign) + ["harmful"] * len(harmful), texts)))
        plots.plot_tradeoff(os.path.join(workdir, "sweep_tradeoff.png"), table, row["setting"])
    unsteered_choice = row["setting"] == sweep_lib.UNSTEERED
    layers = sorted(ranked[:tops[0]]) if unsteered_choice else row["layers"]
    quantile = None if unsteered_choice else row.get("energy_floor_quantile")
    return scale_fields(0.0 if unsteered_choice else row[swept], layers) | {
            "layers": layers,
            "eta": 0.0 if unsteered_choice else eta_for(row[swept], layers),
            "num_steps": steps_list[0] if unsteered_choice else row["num_steps"],
            "energy_floor": None if quantile is None else {l: floors[quantile][l] for l in layers},
            "energy_floor_quantile": quantile,
            "judge": judge.to_dict(),
            "sweep": {"table": table, "chosen": row["setting"], "reason": reason,
                      "benign": {k: v.to_dict() for k, v in s.benign.items()},
                      "harmful": {k: v.to_dict() for k, v in s.harmful.items()},
                      "tolerances": {"max_refusal_drop": s.max_refusal_drop,
                                     "max_incoherence_rise": s.max_incoherence_rise},
                      "max_new_tokens": int(s.max_new_tokens), "seed": int(cfg.data.seed)}}


def run(cfg, workdir: str) -> dict:
    import jax
    import numpy as np
    import models
    import eds_jax
    from eds_jax import collect as collection_lib
    from eds_jax import plots, training
    from eds_jax.data import write_jsonl
    from eds_jax.ebm_io import per_layer_floats
    from eds_jax.steering import check_eta_scale
    from eds_jax.ebm import EBMSpec
    from eds_jax import deployment
    from eds_jax import sweep as sweep_lib
    from eds_jax.judge import get_judge

    start = time.time()
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise app.UsageError(f"--workdir={workdir!r} is a file; expected a directory (new or existing)")
    # every prompt source is read before the model loads and before anything is written
    try:
        check_eta_scale(cfg.steer.eta_scale)
    except ValueError as error:
        raise app.UsageError(f"config.steer.{error}") from None
    benign = collection_lib.read_sources(cfg.data.benign, cfg.data.seed)
    harmful = collection_lib.read_sources(cfg.data.harmful, cfg.data.seed)
    validation = validation_prompts(cfg, set(benign) | set(harmful))
    maybe_initialize_distributed(cfg)
    os.makedirs(workdir, exist_ok=True)
    mesh = training.make_mesh(cfg.mesh.data, cfg.mesh.model)
    # the LLM's weights are split over the mesh's `model` axis (so 8B+ fits across chips) and
    # replicated over `data`; collection batches are split over `data`
    from models.sharding import batch_sharding, param_shardings
    pre = models.load_pretrained(resolve_model_source(cfg.model.source), dtype=cfg.model.dtype,
                                 shardings=lambda config: param_shardings(config, mesh))
    # before collection, so a bad EBM or training setting fails in seconds, not after generation
    spec = EBMSpec.build(cfg.ebm.architecture, pre.config.hidden_size, cfg.ebm.hidden_dim,
                         tuple(cfg.ebm.hidden_dims), cfg.ebm.dropout_rate, cfg.ebm.use_layernorm)
    train_config = training.TrainConfig(cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate,
                                        cfg.train.temperature, cfg.train.seed, cfg.train.select_by)
    data = collection_lib.collect(pre, benign, harmful, os.path.join(workdir, "collect"),
                                  cfg.collect.to_dict(), get_judge(cfg.collect.judge),
                                  batch_sharding=batch_sharding(mesh))
    counts = data.counts()
    logging.info("label counts: %s", counts)
    print(f"label counts: {counts}")
    collection_lib.check_labels(data)

    layers = list(range(pre.config.num_layers))
    result = training.train_layers(data.activations, data.labels, layers, spec, train_config,
                                   cfg.train.val_fraction, mesh, workdir, log=logging.info)
    write_jsonl(os.path.join(workdir, "metrics.jsonl"), result["history"])

    scores = result["metrics"][cfg.train.select_by]
    ranked = [int(layers[i]) for i in np.lexsort((result["metrics"]["loss"], -scores))]  # ties: val loss
    index = {layer: i for i, layer in enumerate(layers)}
    layer_ebm = lambda layer: result["trainer"].layer_ebm(result["params"], index[layer])
    steer = choose_steering(cfg, pre, ranked, layer_ebm, validation, workdir=workdir,
                            sharding=batch_sharding(mesh), data=data)
    chosen = steer.pop("layers")
    validation = {str(layer): {"auc": float(result["metrics"]["auc"][index[layer]]),
                               "sign_accuracy": float(result["metrics"]["sign_accuracy"][index[layer]]),
                               "loss": float(result["metrics"]["loss"][index[layer]]),
                               "best_epoch": int(result["best_epoch"][index[layer]])} for layer in chosen}
    metadata = {"model": pre.source, "model_family": pre.family, "hidden_size": pre.config.hidden_size,
                "selected_by": cfg.train.select_by, "validation": validation, "label_counts": counts,
                "split_counts": result["counts"], deployment.METADATA_KEY: cfg.collect.system,
                "steer": {"eta": per_layer_floats(steer["eta"]), "num_steps": steer["num_steps"],
                          "eta_scale": cfg.steer.eta_scale,
                          "eta_fraction": steer.get("eta_fraction"),
                          "hidden_norm": per_layer_floats(steer.get("hidden_norm")),
                          "energy_floor": per_layer_floats(steer["energy_floor"]),
                          "energy_floor_quantile": steer.get("energy_floor_quantile")},
                "judge": steer["judge"], "sweep": steer["sweep"], "train": cfg.train.to_dict()}
    ebms = {layer: layer_ebm(layer) for layer in chosen}
    if jax.process_index() == 0:
        eds_jax.save_ebms(os.path.join(workdir, "ebms"), ebms, metadata, overwrite=True)
        plots.plot_layer_quality(os.path.join(workdir, "layer_quality.png"), layers,
                                 result["metrics"]["auc"], result["metrics"]["sign_accuracy"], chosen)
        good, bad = result["val_energies"]
        plots.plot_energy_histograms(os.path.join(workdir, "energy_histograms.png"), chosen,
                                     [good[index[l]] for l in chosen], [bad[index[l]] for l in chosen])
    print(summary_table(layers, result, chosen))
    if steer["sweep"]:
        print(sweep_lib.markdown_table(steer["sweep"]["table"], steer["sweep"]["chosen"]))
        print(f"steering setting chosen on validation prompts: {steer['sweep']['reason']}")
    eta = per_layer_floats(steer["eta"])
    eta = eta if not isinstance(eta, dict) else (f"{ {l: round(v, 2) for l, v in eta.items()} } "
                                                 f"({steer['eta_fraction']} x hidden norm)")
    floor = ("" if steer["energy_floor"] is None else
             f", energy floor (quantile {steer['energy_floor_quantile']}) "
             f"{ {l: round(v, 3) for l, v in steer['energy_floor'].items()} }")
    print(f"layers {chosen}, eta {eta}, {steer['num_steps']} steps{floor}; EBMs in "
          f"{os.path.join(workdir, 'ebms')}; wall time {time.time() - start:.0f} s")
    return {"chosen": chosen, "result": result, "counts": counts}


if __name__ == "__main__":
    from eds_jax.cli import absl_main
    app.run(absl_main(lambda: run(FLAGS.config, FLAGS.workdir)))
