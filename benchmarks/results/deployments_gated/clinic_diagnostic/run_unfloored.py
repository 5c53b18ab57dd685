"""Diagnostic on clinic's test sets (not a way to choose): the unfloored setting at the validation
grid's best unfloored fraction, 0.0316 x each layer's hidden norm."""
import sys, json
import eds_jax
from eds_jax.evaluation.options import EvalOptions
from eds_jax.evaluation.run import evaluate
frac = float(sys.argv[1])
saved = eds_jax.load_steering("runs/deployments_gate/clinic/ebms")
eta = {l: frac * n for l, n in saved.settings.hidden_norm.items()}
print("eta", eta, flush=True)
evaluate(EvalOptions(ebms="runs/deployments_gate/clinic/ebms", eta=eta, no_energy_floor=True,
                     methods=("baseline", "eds"), max_new_tokens=40, batch_size=32,
                     output_dir=f"runs/clinic_diag_{frac}", gate_vectors=False))
