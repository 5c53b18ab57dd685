"""One process of the multi-process tests (started by tests/test_training.py).

  distributed_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR train
  distributed_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR collect MODEL_DIR
"""
import json
import os
import sys

process_id, num_processes, port, workdir, mode = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                                  sys.argv[4], sys.argv[5])
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
# timeouts well inside the test's own, so a stuck start or shutdown ends with an error in the log
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes,
                           process_id=process_id, initialization_timeout=90, heartbeat_timeout_seconds=60,
                           shutdown_timeout_seconds=60)
print("INITIALIZED", flush=True)
import numpy as np  # noqa: E402
from eds_jax.training import infonce  # noqa: E402

mesh = infonce.make_mesh(len(jax.devices()), 1)
if mode == "train":
    from eds_jax.core.ebm import EBMSpec
    from test_training import synthetic
    x, labels = synthetic()
    cfg = infonce.TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=0)
    result = infonce.train_layers(x, labels, [0, 1, 2], EBMSpec.complex(16, (32, 16), 0.15, True), cfg, 0.25,
                                   mesh, workdir, log=lambda *_: None)
    params = np.concatenate([np.asarray(l).ravel() for l in jax.tree_util.tree_leaves(result["params"])])
    out = {"losses": [h["train_loss"] for h in result["history"]], "params": params.tolist()}
else:  # collection with each batch's rows split over both processes' devices
    import models
    from eds_jax.training import collect
    from eds_jax.judging.refusal import is_refusal
    from models.sharding import batch_sharding, param_shardings
    from test_training import COLLECT_PROMPTS
    pre = models.load_pretrained(sys.argv[6], dtype="float32",
                                 shardings=lambda config: param_shardings(config, mesh))
    benign, harmful = COLLECT_PROMPTS
    data = collect.collect(pre, benign, harmful, os.path.join(workdir, f"process{process_id}"),
                           {"max_new_tokens": 6, "batch_size": 6, "system": None, "judge": "substring"},
                           is_refusal, batch_sharding=batch_sharding(mesh))
    out = {"responses": data.responses, "activations": data.activations.ravel().tolist()}
print("RESULT " + json.dumps({"devices": len(jax.devices()), "processes": jax.process_count(), **out}),
      flush=True)
# the result is out: leave together, then skip the interpreter's teardown of XLA's objects, which
# the result does not depend on
jax.distributed.shutdown()
sys.stdout.flush(), sys.stderr.flush()
os._exit(0)
