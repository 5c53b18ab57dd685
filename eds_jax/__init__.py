"""Energy-Driven Steering in JAX.

Data flow, one sub-package per stage:
  eds_jax.datasets    prompt files and the data the package ships (`data:` paths)
  eds_jax.training    generate + judge -> labels -> activations -> InfoNCE EBMs -> settings
                      searched on validation prompts -> saved (`train_and_choose`)
  eds_jax.core        EBMs, `Steering`, the decode loop, the saved-steering format (`load_steering`)
  eds_jax.judging     refusal substrings, helpful / refusal / incoherent
  eds_jax.evaluation  baselines, metrics, report (`evaluate`)
"""
from eds_jax.core.decoding import GenerationOutput, bucket_length, generate_text, steered_generate
from eds_jax.core.ebm import EBM, EBMSpec, ebm_from_state_dict, load_torch_ebm
from eds_jax.core.saved import (SavedSteering, SavedSteeringError, SteeringSettings, load_ebms,
                                load_steering, save_ebms, save_steering)
from eds_jax.core.steering import Steering
from eds_jax.judging.refusal import REFUSAL_PHRASES, is_refusal
from eds_jax.training.losses import infonce_loss

__all__ = ["EBM", "EBMSpec", "GenerationOutput", "REFUSAL_PHRASES", "SavedSteering", "SavedSteeringError",
           "Steering", "SteeringSettings", "bucket_length", "ebm_from_state_dict", "generate_text",
           "infonce_loss", "is_refusal", "load_ebms", "load_steering", "load_torch_ebm", "save_ebms",
           "save_steering", "steered_generate"]
