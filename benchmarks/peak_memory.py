"""Peak memory of steered vs plain decoding: the same model, batch, prompt and lengths, each mode in
its own process of one run (so one mode's peak cannot hide the other's), on the setups of
`steering_overhead.py`. Host peak RSS always; the device's peak bytes in use on a GPU.

  python benchmarks/peak_memory.py [--setup=smollm2_cpu|llama31_8b_gpu] [--batch_sizes=1,8]
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from setups import SETUPS  # noqa: E402
from workers import run_worker  # noqa: E402

flags.DEFINE_enum("setup", "smollm2_cpu", list(SETUPS), "which model, EBMs and lengths")
flags.DEFINE_string("batch_sizes", "", "override the setup's batch sizes, e.g. 1,8")
flags.DEFINE_string("output", "", "also write the results as JSON here")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    spec = dict(SETUPS[FLAGS.setup])
    if FLAGS.batch_sizes:
        spec["batch_sizes"] = tuple(int(b) for b in FLAGS.batch_sizes.split(","))
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=ROOT)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "steering_overhead.py")
    rows = []
    for batch in spec["batch_sizes"]:
        for mode in ("plain", "steered"):
            rows.append(dict(run_worker(script, dict(spec, batch=batch, impl="jax", only=mode), env), mode=mode))
            print(json.dumps(rows[-1]), flush=True)
    gib = lambda b: b / 2**30
    print(f"\n{FLAGS.setup}: {len(spec['layers'])} steered layers x {spec['steps']} steps, "
          f"{spec['long']} new tokens\n")
    print("| batch | plain host RSS GiB | steered host RSS GiB | steered / plain | device peak GiB (plain / steered) |")
    print("|---|---|---|---|---|")
    for batch in spec["batch_sizes"]:
        plain, steered = [r for r in rows if r["batch"] == batch]
        device = (f"{gib(plain['device_peak_bytes']):.2f} / {gib(steered['device_peak_bytes']):.2f}"
                  if "device_peak_bytes" in plain else "-")
        print(f"| {batch} | {gib(plain['host_peak_rss_bytes']):.2f} | {gib(steered['host_peak_rss_bytes']):.2f} | "
              f"{steered['host_peak_rss_bytes'] / plain['host_peak_rss_bytes']:.3f} | {device} |")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"setup": FLAGS.setup, "spec": spec, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
