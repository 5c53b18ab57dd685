"""One training epoch: the vectorised, layer-stacked JAX InfoNCE step vs a per-positive PyTorch loop.

Both train one EBM per layer on the same activations with Adam, batch 64 positives + 64 negatives.
The PyTorch side is the upstream way: one layer at a time, and per batch a Python loop over the
positives, each a cross-entropy over [E(p_i), E(n_1..N)] (negatives' energies computed once per
batch). Printed: seconds per epoch (after compile / warm-up) and the ratio.

  python benchmarks/infonce_training.py [--layers=30 --dim=576 --examples=1024]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

flags.DEFINE_integer("layers", 30, "layers (EBMs) trained together")
flags.DEFINE_integer("dim", 576, "hidden size (SmolLM2-135M: 576)")
flags.DEFINE_integer("examples", 1024, "training examples (half good, half bad)")
flags.DEFINE_integer("hidden_dim", 512, "simple EBM width")
flags.DEFINE_integer("batch_size", 64, "positives (and negatives) per step")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import numpy as np
    import torch
    from eds_jax.training import infonce
    from eds_jax.core.ebm import EBMSpec
    from torch_reference import TorchSimpleEBM

    rng = np.random.RandomState(0)
    n, layers, dim = FLAGS.examples, FLAGS.layers, FLAGS.dim
    x = rng.randn(n, layers, dim).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.int8)
    pos, neg = x[labels == 1], x[labels == 0]
    steps = -(-len(pos) // FLAGS.batch_size)

    spec = EBMSpec.simple(dim, FLAGS.hidden_dim)
    cfg = infonce.TrainConfig(epochs=1, batch_size=FLAGS.batch_size, learning_rate=5e-5,
                               temperature=0.1, seed=0)
    trainer = infonce.LayerwiseTrainer(spec, layers, cfg, infonce.make_mesh())
    state = trainer.init_state()
    state, _ = trainer.run_epoch(state, pos, neg)  # compile
    times = []
    for epoch in range(1, 4):
        start = time.perf_counter()
        state, losses = trainer.run_epoch(dict(state, epoch=epoch), pos, neg)
        times.append(time.perf_counter() - start)
    jax_epoch = min(times)

    torch.manual_seed(0)
    ebms = [TorchSimpleEBM(dim, FLAGS.hidden_dim) for _ in range(layers)]
    optimisers = [torch.optim.Adam(e.parameters(), lr=5e-5) for e in ebms]
    tpos, tneg = torch.tensor(pos), torch.tensor(neg)

    def torch_epoch():
        order_p, order_n = torch.randperm(len(tpos)), torch.randperm(len(tneg))
        for layer in range(layers):
            ebm, opt = ebms[layer], optimisers[layer]
            ebm.train()
            for s in range(steps):
                p = tpos[order_p[s * FLAGS.batch_size:(s + 1) * FLAGS.batch_size], layer]
                q = tneg[order_n[s * FLAGS.batch_size:(s + 1) * FLAGS.batch_size], layer]
                e_pos, e_neg = ebm(p)[:, 0], ebm(q)[:, 0]
                loss = 0
                for i in range(len(e_pos)):
                    logits = torch.cat([-e_pos[i:i + 1], -e_neg]) / cfg.temperature
                    loss = loss + torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long))
                loss = loss / len(e_pos)
                opt.zero_grad()
                loss.backward()
                opt.step()

    torch_epoch()  # warm-up
    start = time.perf_counter()
    torch_epoch()
    torch_time = time.perf_counter() - start
    print(f"{layers} layers x {steps} steps, {len(pos)}+{len(neg)} examples, dim {dim}, simple EBM "
          f"{FLAGS.hidden_dim}, torch threads {torch.get_num_threads()}")
    print(f"| impl | s/epoch |\n|---|---|\n| JAX (vmapped layers, jitted step) | {jax_epoch:.3f} |\n"
          f"| PyTorch per-positive loop | {torch_time:.3f} |")
    print(f"JAX ÷ PyTorch speed-up: {torch_time / jax_epoch:.1f}x")


if __name__ == "__main__":
    app.run(main)
