"""One process of the multi-process training test (started by tests/test_training.py)."""
import json
import os
import sys

process_id, num_processes, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                           process_id=process_id)
import numpy as np  # noqa: E402
from eds_jax import training  # noqa: E402
from eds_jax.ebm import EBMSpec  # noqa: E402
from test_training import synthetic  # noqa: E402

x, labels = synthetic()
cfg = training.TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=0)
result = training.train_layers(x, labels, [0, 1, 2], EBMSpec.complex(16, (32, 16), 0.15, True), cfg, 0.25,
                               training.make_mesh(len(jax.devices()), 1), workdir, log=lambda *_: None)
params = np.concatenate([np.asarray(l).ravel() for l in jax.tree_util.tree_leaves(result["params"])])
print("RESULT " + json.dumps({"devices": len(jax.devices()), "processes": jax.process_count(),
                              "losses": [h["train_loss"] for h in result["history"]],
                              "params": params.tolist()}), flush=True)
