"""SmolLM2-135M-Instruct (the embedded GGUF) trained on the public training splits the package ships.

The evaluation in the README uses these EBMs: benign training prompts are Alpaca-style harmless
instructions plus the seemingly toxic OR-Bench-Hard, XSTest-safe and OKTest training splits; harmful
ones are the harmful and XSTest-unsafe training splits. Test sets (ORB-H test, XSTest-safe val,
OKTest val, JailbreakBench, HarmBench test) are not among them.
"""
from configs.common import FLOOR_QUANTILES, LOG_ETA_FRACTIONS, PUBLIC, source
from configs.smollm2_135m import get_config as smollm2_config


def get_config():
    c = smollm2_config()  # the same training prompts
    c.collect.max_new_tokens = 40
    c.collect.batch_size = 32
    # eta as a fraction of each layer's median hidden-state norm: SmolLM2's norms grow with depth
    # (134 at layer 15, 325 at 23), so one absolute eta pushes shallow layers hardest (README)
    c.steer.eta_scale = "hidden_norm"
    c.sweep.etas = LOG_ETA_FRACTIONS  # then refined around the best (configs/common.py)
    c.sweep.energy_floor_quantiles = FLOOR_QUANTILES
    c.sweep.refine_rounds = 3
    c.sweep.max_new_tokens = 48
    # validation prompts for the eta sweep: neither training nor test prompts
    c.sweep.benign = {"or_bench_hard": source(f"{PUBLIC}/or_bench_hard_val.json", limit=64),
                      "harmless": source(f"{PUBLIC}/harmless_val.json")}
    c.sweep.harmful = {"harmful": source(f"{PUBLIC}/harmful_val.json"),
                       "xstest_unsafe": source(f"{PUBLIC}/xstest_unsafe_val.json")}
    c.gate.enabled = True  # steer only prompts the model's own states read as benign (README)
    # the EBMs also learn at the first 8 answer tokens, where the steps act (9x the rows of the
    # prompt token alone: 20 epochs take about as many optimiser steps as 180 did before)
    c.collect.generated_states = 8
    c.train.epochs = 20
    c.train.batch_size = 64
    return c
