"""Diagnostic (not a choice): the fresh-clone EBMs at the setting the 2026-11-24 run chose
(fraction 0.2 of each layer's norm, q0.8 energy floor) on the test sets, through evaluate()."""
import glob, json, sys
import numpy as np
sys.path.insert(0, "/work/main")
import eds_jax
from eds_jax.evaluation.options import EvalOptions
from eds_jax.evaluation.run import evaluate
from eds_jax.training.pipeline import energy_floors

ebms_dir = "/tmp/repro/eds-jax/runs/smollm2_shared/ebms"
saved = eds_jax.load_steering(ebms_dir, eta=1.0)
npz = np.load(glob.glob("/tmp/repro/eds-jax/runs/smollm2_shared/collect/activations-*.npz")[0])
floors = energy_floors(saved.ebms, npz["activations"], npz["labels"], [0.8])[0.8]
eta = {l: 0.2 * n for l, n in saved.settings.hidden_norm.items()}
print("eta", eta, "floors", floors)
# a copy of the EBMs saved with that setting, so evaluate() loads it as any saved steering
settings = eds_jax.SteeringSettings(layers=saved.settings.layers, eta=eta, num_steps=3, energy_floor=floors,
                                    eta_scale="hidden_norm", eta_fraction=0.2, hidden_norm=saved.settings.hidden_norm,
                                    energy_floor_quantile=0.8, chosen_on_validation=False)
eds_jax.save_steering("/tmp/diag/ebms", saved.ebms, settings, system=saved.system, model=saved.model,
                      judge=saved.judge, sweep=saved.sweep, training={}, overwrite=True)
evaluate(EvalOptions(output_dir="/tmp/diag/eval", ebms="/tmp/diag/ebms", methods=("baseline", "eds"),
                     max_new_tokens=40, batch_size=32))
