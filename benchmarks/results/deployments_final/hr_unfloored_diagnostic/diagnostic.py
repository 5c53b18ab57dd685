"""Diagnostic (not a choice): hr's EBMs at the search's unfloored runner-up, 0.02737 x norm, on the test sets."""
from eds_jax.core.saved import read_metadata
from eds_jax.evaluation.options import EvalOptions
from eds_jax.evaluation.run import evaluate
ebms = "runs/deployments_final/hr/ebms"
meta = read_metadata(ebms)
norms = meta["steering"]["hidden_norm"]
eta = {int(l): 0.02737 * float(v) for l, v in norms.items()}
print("eta", eta, flush=True)
evaluate(EvalOptions(ebms=ebms, methods=("baseline", "eds"), eta=eta, no_energy_floor=True,
                     max_new_tokens=40, batch_size=32, output_dir="runs/hr_unfloored_diagnostic"))
