"""The methods an evaluation compares, as interventions through one decode loop: plain decoding,
EDS with saved EBMs, and the steering-vector baselines (activation addition, direction ablation,
SafeSteer, false-refusal vector ablation) with their coefficients chosen by the same rule on the same validation prompts as EDS's
settings (`eds_jax.training.search`)."""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Optional, Sequence

import numpy as np

from eds_jax.evaluation.options import EvalError, EvalOptions

VECTOR_METHODS = ("actadd", "ablation", "safesteer", "fr_ablation")

log = logging.getLogger("eds_jax.evaluation")


class Validation:
    """The validation prompts the EBMs' settings were chosen on (their metadata), for choosing the
    vector baselines' coefficients by the same rule; the unsteered responses are generated once."""

    def __init__(self, pre, sweep: Optional[dict], system, judge, batch_size: int):
        self.pre, self.sweep, self.system, self.judge = pre, sweep, system, judge
        self.batch_size, self._prompts, self._unsteered = batch_size, None, None

    def choose(self, method: str, build, candidates: Sequence[float]) -> tuple[float, dict]:
        from eds_jax.training import collect, search
        swept = self.sweep
        if not swept:
            raise EvalError(f"choosing the {method} coefficient needs validation prompts: give "
                                 f"--{method}_coeff, or --ebms whose metadata holds a sweep "
                                 "(train_ebm.py with config.sweep.etas)")
        if self._prompts is None:
            self._prompts = (collect.read_sources(swept["benign"], swept.get("seed", 0)),
                             *collect.read_named_sources(swept["harmful"], swept.get("seed", 0)))
        benign, harmful, harmful_sources = self._prompts
        options = dict(system=self.system, max_new_tokens=int(swept["max_new_tokens"]),
                       batch_size=self.batch_size)
        if self._unsteered is None:
            import eds_jax
            self._unsteered = eds_jax.generate_text(self.pre, benign + harmful, progress=True, **options)
        group = search.SettingGroup({"method": method}, "coeff", [float(c) for c in candidates], build)
        # the search that chose EDS's settings (older metadata: the grid), by the same rule
        adaptive = search.AdaptiveSearch(**swept["search"]) if swept.get("search") else search.GRID
        tolerances = search.Tolerances(**swept["tolerances"])
        table, _ = search.run_search(self.pre, benign, harmful, [group], self.judge, adaptive,
                                     tolerances, harmful_sources=harmful_sources,
                                     baseline=self._unsteered, seed=int(swept.get("seed", 0)),
                                     **options)
        row, reason = search.choose_setting(table, tolerances)
        log.info("%s: %s", method, reason)
        print(f"{method} coefficient on validation prompts: {reason}")
        coeff = 0.0 if row["setting"] == search.UNSTEERED else row["coeff"]
        return coeff, {"table": table, "chosen": row["setting"], "reason": reason,
                       "search": dataclasses.asdict(adaptive)}


def build_methods(opts: EvalOptions, pre, saved, system, judge) -> tuple[dict, dict]:
    """{method: intervention or None} for `opts.methods`, and a description of each for
    results.json. `saved`: what `eds_jax.load_steering(opts.ebms, ...)` returned, or None."""
    from eds_jax.training.collect import last_token_activations
    from eds_jax.datasets.prompt_files import load_prompts, load_prompts_with
    from eds_jax.core import vectors
    from eds_jax.core.steering import median_hidden_norms

    methods = list(opts.methods)
    ebms = saved.ebms if saved is not None else {}
    metadata = saved.metadata if saved is not None else {}
    interventions, described = {}, {}
    if "baseline" in methods:
        interventions["baseline"], described["baseline"] = None, {}
    gate = saved.gate if saved is not None else None
    if opts.gate_vectors and gate is None:
        raise EvalError("--gate_vectors needs --ebms saved with a prompt gate (config.gate.enabled)")
    if "eds" in methods:
        steering = saved.steering
        if steering is None:
            print(saved.note)
        elif opts.no_gate and steering.gate is not None:
            steering = copy.copy(steering)
            steering.gate = None
        interventions["eds"] = steering
        described["eds"] = {"layers": sorted(ebms), "ebms": saved.directory,
                            "params_sha256": metadata["params_sha256"], "unsteered": steering is None,
                            "eta_fraction": saved.settings.eta_fraction if opts.eta is None else None,
                            "chosen_on_validation": saved.settings.chosen_on_validation
                            and opts.eta is None and opts.num_steps is None and not opts.no_energy_floor,
                            # the EBMs' settings search, for the trade-off figure beside the baselines'
                            "sweep": ({"table": saved.sweep["table"], "chosen": saved.sweep["chosen"]}
                                      if saved.sweep and saved.sweep.get("table") else None),
                            "gate": (None if steering is None or steering.gate is None
                                     else steering.gate.to_metadata())}
        if steering is not None:
            described["eds"] |= {
                "num_steps": steering.num_steps,
                "eta": {str(l): float(v) for l, v in steering.etas.items()},
                "energy_floor": None if steering.energy_floors is None else
                {str(l): float(v) for l, v in steering.energy_floors.items()}}
    vector_methods = [m for m in methods if m in VECTOR_METHODS]
    if not vector_methods:
        return interventions, described
    layers = [int(layer) for layer in opts.vector_layers] or sorted(ebms)
    if not layers:
        raise EvalError(f"{vector_methods} need --vector_layers (or --ebms, whose layers are used)")
    batch = opts.batch_size
    validation = Validation(pre, saved.sweep if saved is not None else None, system, judge, batch)

    def with_coeff(method, vector, mode, given, candidates):
        """The intervention at the given coefficient, else at the one the rule chooses."""
        vector_gate = gate if opts.gate_vectors else None
        build = lambda c: vectors.VectorSteering(vector, mode, c, layers, gate=vector_gate)
        gated = {"gated": vector_gate is not None}
        if given is not None:
            return (None if given == 0 else build(given)), {"coeff": given, "mode": mode} | gated
        coeff, chosen = validation.choose(method, build, candidates)
        # kept unsteered: plain decoding, whose answers the evaluation reuses from the baseline
        return (None if coeff == 0 else build(coeff)), {"coeff": coeff, "mode": mode, "sweep": chosen} | gated

    def activations(path):
        return last_token_activations(pre, load_prompts(path, None, opts.direction_limit or None), system, batch)

    benign = activations(opts.direction_benign)
    # added vectors are unit directions times each layer's median hidden-state norm, so their
    # coefficients are fractions of it, as EDS's eta is with eta_scale="hidden_norm"
    norms = median_hidden_norms(benign, layers)
    scale = {"scale": "fraction of the layer's median hidden-state norm",
             "hidden_norm": {str(l): n for l, n in norms.items()}}
    if {"actadd", "ablation", "fr_ablation"} & set(vector_methods):
        harmful = activations(opts.direction_harmful)
        direction = vectors.mean_difference(harmful, benign)  # the true-refusal direction
        source = {"layers": layers, "harmful": opts.direction_harmful, "benign": opts.direction_benign,
                  "rows": [len(harmful), len(benign)],
                  "norms": {layer: float(np.linalg.norm(direction[layer])) for layer in layers}}
        if "actadd" in methods:
            interventions["actadd"], extra = with_coeff("actadd", vectors.scaled_to_norm(direction, norms), "add",
                                                        opts.actadd_coeff, opts.actadd_coeffs)
            described["actadd"] = source | scale | extra
        if "ablation" in methods:
            interventions["ablation"], extra = with_coeff("ablation", direction, "ablate", opts.ablation_strength,
                                                          opts.ablation_strengths)
            described["ablation"] = source | extra
        if "fr_ablation" in methods:
            pseudo = activations(opts.direction_pseudo_harmful)
            false_refusal = vectors.orthogonalise(vectors.mean_difference(pseudo, benign), direction)
            interventions["fr_ablation"], extra = with_coeff(
                "fr_ablation", false_refusal, "ablate", opts.fr_ablation_strength, opts.fr_ablation_strengths)
            described["fr_ablation"] = {"layers": layers, "pseudo_harmful": opts.direction_pseudo_harmful,
                                        "benign": opts.direction_benign, "orthogonal_to": opts.direction_harmful,
                                        "rows": [len(pseudo), len(benign)]} | extra
    if "safesteer" in methods:
        prompts, categories = load_prompts_with(opts.safesteer_prompts, opts.safesteer_category_field)
        per_category = vectors.category_vectors(last_token_activations(pre, prompts, system, batch),
                                                categories, benign)
        if opts.safesteer_category and opts.safesteer_category not in per_category:
            raise EvalError(f"--safesteer_category={opts.safesteer_category!r} is not among "
                            f"{sorted(per_category)}")
        chosen = [opts.safesteer_category] if opts.safesteer_category else sorted(per_category)
        vector = vectors.scaled_to_norm(np.mean([per_category[c] for c in chosen], axis=0), norms)
        interventions["safesteer"], extra = with_coeff("safesteer", vector, "add", opts.safesteer_coeff,
                                                       opts.safesteer_coeffs)
        described["safesteer"] = {"layers": layers, "categories": chosen, "prompts": opts.safesteer_prompts,
                                  "benign": opts.direction_benign} | scale | extra
    return {m: interventions[m] for m in methods}, {m: described[m] for m in methods}
