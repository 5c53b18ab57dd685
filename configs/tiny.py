"""Tests: a tiny random Llama (built by tests.conftest / --config.model.source=DIR) and a few prompts."""
from configs.common import source
from configs.smollm2_135m import get_config as smollm2_config

PROMPTS = "data:own"  # eds_jax/datasets/own: the project's own prompt sets


def get_config():
    c = smollm2_config()
    c.model.source = ""  # a tiny checkpoint directory, given on the command line
    c.collect.max_new_tokens = 8
    c.collect.generated_states = 0  # tests that want generated-token states set them
    c.collect.batch_size = 8
    c.ebm.hidden_dim = 32
    c.train.epochs = 4
    c.train.batch_size = 8
    c.steer.top_n_layers = 2
    c.collect.system = "Be careful."  # short, so the tests stay fast; round-trips like the default's
    c.data.benign = {"prompts": source(f"{PROMPTS}/benign.jsonl")}
    c.data.harmful = {"prompts": source(f"{PROMPTS}/harmful.jsonl")}
    c.sweep.benign = {"prompts": source(f"{PROMPTS}/benign_val.jsonl")}
    c.sweep.harmful = {"prompts": source(f"{PROMPTS}/harmful_val.jsonl")}
    c.sweep.etas = ()  # tests that want the sweep set it
    c.sweep.refine_rounds = 3
    c.sweep.max_new_tokens = 48
    c.sweep.energy_floor_quantiles = (0.9,)
    c.steer.eta_scale, c.steer.eta = "absolute", 8.0
    c.gate.enabled = False  # tests that want the prompt gate set it
    return c
