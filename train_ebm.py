"""Train EDS energy models and choose how to steer with them (`eds_jax.training.pipeline`).

  python train_ebm.py                                   # embedded default: SmolLM2 GGUF, own prompts
  python train_ebm.py --config=configs/llama31_8b_instruct.py --workdir=runs/llama --config.train.epochs=3

Outputs in --workdir (see `eds_jax.training.pipeline`); WORKDIR/ebms is read back in one call with
`eds_jax.load_steering(WORKDIR/ebms)`, or by `steer_decode.py --ebms=WORKDIR/ebms`.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "smollm2_135m.py")
if __name__ == "__main__":  # before DEFINE_config_file, which applies the overrides at once
    from eds_jax.cli import check_config_overrides
    check_config_overrides(sys.argv, DEFAULT_CONFIG)
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "ml_collections config file (configs/*.py)")
flags.DEFINE_string("workdir", "workdir", "output directory")
FLAGS = flags.FLAGS


def run(cfg, workdir: str):
    from eds_jax.training.pipeline import train_and_choose
    result = train_and_choose(cfg, workdir)
    print(result.summary)
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.phase_s.items())
    print(f"wall time {result.wall_time_s:.0f} s ({phases})")
    return result


if __name__ == "__main__":
    from eds_jax.cli import absl_main
    app.run(absl_main(lambda: run(FLAGS.config, FLAGS.workdir)))
