"""Diagnostic on a development deployment (hr, now seen): the shared config's search with a validation
sample that also holds the project's own alarming-wording benign prompts (XSTest-like), on hr's
trained EBMs (collection and training checkpoints copied, so only the search reruns); then EDS at
its choice on the test sets."""
import time
from configs.common import source
from configs.smollm2_135m_shared import get_config
from eds_jax.evaluation.options import EvalOptions
from eds_jax.evaluation.run import evaluate
from eds_jax.training.pipeline import train_and_choose

cfg = get_config()
cfg.collect.system = "deployment:hr"
cfg.sweep.benign = {"or_bench_hard": cfg.sweep.benign.or_bench_hard, "harmless": cfg.sweep.benign.harmless,
                    "own_val": source("data:own/benign_val.jsonl"),
                    "own": source("data:own/benign.jsonl", limit=40)}
start = time.time()
result = train_and_choose(cfg, "runs/hr_broadval")
print(f"train + search {time.time() - start:.0f} s; chosen {result.sweep['chosen']}", flush=True)
print(result.summary, flush=True)
start = time.time()
evaluate(EvalOptions(ebms=result.ebms_dir, methods=("eds",), max_new_tokens=40, batch_size=32,
                     output_dir="runs/hr_broadval_eval"))
print(f"evaluate {time.time() - start:.0f} s", flush=True)
