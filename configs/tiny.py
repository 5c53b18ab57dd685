"""Tests: a tiny random Llama (built by tests.conftest / --config.model.source=DIR) and a few prompts."""
from configs.smollm2_135m import get_config as smollm2_config


def get_config():
    c = smollm2_config()
    c.model.source = ""  # a tiny checkpoint directory, given on the command line
    c.collect.max_new_tokens = 8
    c.collect.batch_size = 8
    c.ebm.hidden_dim = 32
    c.train.epochs = 4
    c.train.batch_size = 8
    c.steer.top_n_layers = 2
    c.collect.system = "Be careful."  # short, so the tests stay fast; round-trips like the default's
    c.sweep.etas = ()  # tests that want the sweep set it
    return c
