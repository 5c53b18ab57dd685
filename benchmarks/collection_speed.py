"""Wall time of collection (the model's own responses and last-prompt-token activations) on a
sample of the shared-splits config's training prompts: generation, the separate activations pass,
and generation that takes the activations from its prefill (what `train_ebm.py` runs now).

  python benchmarks/collection_speed.py                         # this checkout
  python benchmarks/collection_speed.py --code=/path/to/older   # the same run on another checkout

`--code` puts another checkout's `models` and `eds_jax` first on the import path, so a before/after
comparison runs the same prompts, settings and script. Times include compilation, as a user's run
does; the responses of both runs can be compared with `--output`.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("code", ROOT, "checkout whose models/ and eds_jax/ are measured")
flags.DEFINE_string("config", os.path.join(ROOT, "configs", "smollm2_135m_shared.py"), "training config")
flags.DEFINE_integer("prompts", 256, "prompts sampled (seed 0) from the config's benign + harmful sources")
flags.DEFINE_string("output", "", "write times and responses as JSON here")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    sys.path.insert(0, ROOT)  # configs/
    sys.path.insert(0, os.path.abspath(FLAGS.code))
    import importlib.util
    import numpy as np
    import jax
    import models
    from eds_jax.training import collect
    from eds_jax.core.decoding import generate_text

    spec = importlib.util.spec_from_file_location("collection_config", FLAGS.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    prompts = (collect.read_sources(config.data.benign, config.data.seed)
               + collect.read_sources(config.data.harmful, config.data.seed))
    picked = sorted(np.random.RandomState(0).choice(len(prompts), FLAGS.prompts, replace=False))
    prompts = [prompts[i] for i in picked]
    c = config.collect
    pre = models.load_pretrained(models.smollm2_gguf_path(), dtype=config.model.dtype)
    print(f"code={FLAGS.code} prompts={len(prompts)} max_new_tokens={c.max_new_tokens} "
          f"batch={c.batch_size} system={len(c.system)} chars", flush=True)

    start = time.perf_counter()
    responses = generate_text(pre, prompts, system=c.system, max_new_tokens=int(c.max_new_tokens),
                              batch_size=int(c.batch_size), progress=True)
    generation_s = time.perf_counter() - start
    start = time.perf_counter()
    activations = collect.last_token_activations(pre, prompts, c.system, int(c.batch_size))
    jax.block_until_ready(activations)
    activations_s = time.perf_counter() - start
    result = {"code": FLAGS.code, "prompts": len(prompts), "generation_s": generation_s,
              "activations_s": activations_s, "total_s": generation_s + activations_s,
              "date": time.strftime("%Y-%m-%d")}
    if "return_prompt_states" in inspect.signature(generate_text).parameters:  # older code: absent
        start = time.perf_counter()
        fused, out = generate_text(pre, prompts, system=c.system, max_new_tokens=int(c.max_new_tokens),
                                   batch_size=int(c.batch_size), progress=True, return_outputs=True,
                                   return_prompt_states=True)
        states = np.asarray(jax.block_until_ready(out.prompt_states))
        error = np.linalg.norm(states - activations, axis=-1) / np.linalg.norm(activations, axis=-1)
        result |= {"fused_s": time.perf_counter() - start, "fused_responses_same": fused == responses,
                   "fused_activations_max_rel_error": float(error.max())}
    print(json.dumps(result), flush=True)
    if FLAGS.output:
        np.save(FLAGS.output.replace(".json", "_activations.npy"), activations)
        with open(FLAGS.output, "w") as f:
            json.dump(dict(result, responses=responses), f, indent=1)


if __name__ == "__main__":
    app.run(main)
