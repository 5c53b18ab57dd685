"""Energy-Driven Steering in JAX.

Data flow: prompts -> generate + judge (`is_refusal`) -> labelled prompts -> activations ->
InfoNCE-trained EBMs (`EBM`, `save_ebms`) -> `Steering` -> `steered_generate` / `generate_text`.
"""
from eds_jax.decoding import GenerationOutput, bucket_length, generate_text, steered_generate
from eds_jax.ebm import EBM, EBMSpec, ebm_from_state_dict, load_torch_ebm
from eds_jax.ebm_io import load_ebms, save_ebms
from eds_jax.judge import REFUSAL_PHRASES, is_refusal
from eds_jax.losses import infonce_loss
from eds_jax.steering import Steering

__all__ = ["EBM", "EBMSpec", "GenerationOutput", "REFUSAL_PHRASES", "Steering", "bucket_length",
           "ebm_from_state_dict", "generate_text", "infonce_loss", "is_refusal", "load_ebms",
           "load_torch_ebm", "save_ebms", "steered_generate"]
