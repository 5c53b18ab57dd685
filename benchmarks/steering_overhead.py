"""Decode speed of the JAX loop vs transformers' generate, each plain and steered, in one run.

Each measurement runs in its own subprocess (so JAX and PyTorch never share the accelerator and
peak memory is per implementation); the driver prints one table with the ratios.

  python benchmarks/steering_overhead.py --setup=smollm2_cpu           # real SmolLM2 GGUF, CPU
  python benchmarks/steering_overhead.py --setup=llama31_8b_gpu        # random Llama-3.1-8B, bf16

Per-token time is the slope between two generation lengths, so prefill does not count:
ms/token = (t(long) - t(short)) / (long - short). Compile time is the first call's wall time minus
the steady-state time of the same call.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # torch_reference: the PyTorch hook reference
from workers import report, run_worker  # noqa: E402  (benchmarks/, the script's own directory)

from setups import SETUPS  # noqa: E402  (shared with peak_memory.py)

flags.DEFINE_enum("setup", "smollm2_cpu", list(SETUPS), "which benchmark")
flags.DEFINE_string("impls", "jax,torch", "implementations to run, comma-separated")
flags.DEFINE_string("batch_sizes", "", "override the setup's batch sizes, e.g. 1,16")
flags.DEFINE_string("layers", "", "override the steered layers, e.g. 8,9,10")
flags.DEFINE_string("worker", "", "internal: run one measurement (json spec) and print json")
flags.DEFINE_string("output", "", "also write the results as JSON here")
FLAGS = flags.FLAGS

SMOL_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
                "How do I kill a Python process?", "Explain photosynthesis to a child in two sentences.",
                "Give me three tips for writing clean code.", "What is the difference between TCP and UDP?",
                "Summarise the plot of Hamlet.", "How can I whittle a knife safely?"]


def _llama31_8b_hf():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                       rope_theta=500000.0, bos_token_id=128000, eos_token_id=None)


def _qwen3_8b_hf():
    from transformers import Qwen3Config
    return Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                       num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, rope_theta=1000000.0, eos_token_id=None)


def _prompts(spec, tokenizer_or_none, vocab, batch):
    import numpy as np
    if spec["model"] == "smollm2":
        from eds_jax.core.decoding import chat_prompts
        texts = chat_prompts(tokenizer_or_none, (SMOL_PROMPTS * 4)[:batch])
        enc = tokenizer_or_none(texts, return_tensors="np", padding=True, add_special_tokens=False)
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)
    ids = np.random.RandomState(0).randint(0, vocab, (batch, spec["prompt_len"])).astype(np.int32)
    return ids, np.ones_like(ids)


def _ebm_specs(spec, hidden):
    from eds_jax.core.ebm import EBMSpec
    specs = {}
    for i, layer in enumerate(spec["layers"]):
        if spec["ebm"] == "complex" or i % 2 == 1:
            specs[layer] = EBMSpec.complex(hidden, (2048, 1024, 1024, 512), 0.15, True)
        else:
            specs[layer] = EBMSpec.simple(hidden, 512)
    return specs


def _time(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(device: str) -> dict:
    """This process's peak host RSS, and the accelerator's peak bytes in use on a GPU."""
    import resource
    import jax
    out = {"host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device == "gpu":
        out["device_peak_bytes"] = int((jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0))
    return out


def run_jax(spec):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import models
    import eds_jax
    from eds_jax.core.ebm import EBM
    from models.checkpoint import param_shapes
    from flax import traverse_util

    if spec["model"] == "smollm2":
        pre = models.load_pretrained(models.smollm2_gguf_path(), dtype=spec["dtype"])
    else:
        hf = _llama31_8b_hf() if spec["model"] == "llama31_8b" else _qwen3_8b_hf()
        config = models.from_hf_config(hf)
        dtype = jnp.dtype(spec["dtype"])
        shapes = param_shapes(config, dtype)
        key = jax.random.PRNGKey(0)
        flat = {}
        for i, (path, s) in enumerate(sorted(shapes.items())):
            if path[-1] == "scale":
                flat[path] = jnp.ones(s.shape, dtype)
            else:
                flat[path] = (0.02 * jax.random.normal(jax.random.fold_in(key, i), s.shape, jnp.float32)).astype(dtype)
        pre = models.Pretrained(config, traverse_util.unflatten_dict(flat), None, dtype.name, "random")
    config = pre.config
    specs = _ebm_specs(spec, config.hidden_size)
    ebms = {layer: EBM.init(s, jax.random.PRNGKey(layer)) for layer, s in specs.items()}
    steering = eds_jax.Steering(ebms, eta=spec["eta"], num_steps=spec["steps"])
    ids, mask = _prompts(spec, pre.tokenizer, config.vocab_size, spec["batch"])
    # every length runs all its steps, as torch's min_new_tokens makes it: no early exit at EOS
    # (the tokenizer's EOS counts too, so it goes once the prompts are tokenised)
    pre = dataclasses.replace(pre, tokenizer=None,
                              config=dataclasses.replace(pre.config, eos_token_ids=()))
    assert pre.eos_token_ids == ()
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(pre.params))

    results = {"impl": "jax", "device": str(jax.devices()[0].device_kind), "batch": spec["batch"],
               "weight_bytes": int(weight_bytes), "prompt_len": int(ids.shape[1])}
    modes = (("plain", None), ("steered", steering))
    if spec.get("only"):  # one mode per process: its peak memory is that mode's (peak_memory.py)
        modes = [m for m in modes if m[0] == spec["only"]]
    for name, st in modes:
        def gen(n):
            out = eds_jax.steered_generate(pre, ids, mask, steering=st, max_new_tokens=n)
            jax.block_until_ready(out.tokens)
            return out
        first = time.perf_counter(); gen(spec["short"]); first = time.perf_counter() - first
        gen(spec["long"])
        t_short, t_long = _time(lambda: gen(spec["short"])), _time(lambda: gen(spec["long"]))
        results[name] = {"compile_s": first - t_short,
                         "ms_per_token": 1000 * (t_long - t_short) / (spec["long"] - spec["short"]),
                         "gen_s_long": t_long}
    if spec.get("only"):
        return results | peak_memory(spec["device"])
    # what one token at batch 1 must at least cost: reading every weight once
    x = jnp.ones((256, 1024, 1024), jnp.float32)  # 1 GiB
    total = jax.jit(jnp.sum)
    jax.block_until_ready(total(x))
    results["read_bandwidth"] = x.size * 4 / _time(lambda: jax.block_until_ready(total(x)), repeats=5)
    del x
    if spec["device"] == "gpu":
        stats = jax.devices()[0].memory_stats() or {}
        results["peak_bytes"] = int(stats.get("peak_bytes_in_use", 0))
        x = jnp.ones((1024, 1024, 1024), jnp.bfloat16)  # 2 GiB
        copy = jax.jit(lambda a: a + 1)
        jax.block_until_ready(copy(x))
        t = _time(lambda: jax.block_until_ready(copy(x)), repeats=10)
        results["copy_bandwidth"] = 2 * x.size * 2 / t  # bytes read + written per second
    return results


def run_torch(spec):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen3ForCausalLM
    import torch_reference as ref

    gpu = spec["device"] == "gpu"
    device = "cuda" if gpu else "cpu"
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    if spec["model"] == "smollm2":
        from models.gguf_file import GGUFFile
        from models import smollm2_gguf_path
        path = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                     dtype=dtype).eval()
        tokenizer = GGUFFile(path).tokenizer()
        hidden, vocab = model.config.hidden_size, model.config.vocab_size
    else:
        hf = _llama31_8b_hf() if spec["model"] == "llama31_8b" else _qwen3_8b_hf()
        cls = LlamaForCausalLM if spec["model"] == "llama31_8b" else Qwen3ForCausalLM
        with torch.device(device):
            torch.set_default_dtype(dtype)
            model = cls(hf).eval()
            torch.set_default_dtype(torch.float32)
        tokenizer, hidden, vocab = None, hf.hidden_size, hf.vocab_size
    ebms = {}
    for layer, s in _ebm_specs(spec, hidden).items():
        if s.architecture == "simple":
            ebms[layer] = ref.TorchSimpleEBM(hidden, s.hidden_dims[0]).to(device)
        else:
            ebms[layer] = ref.TorchComplexEBM(hidden, s.hidden_dims, s.dropout_rate, s.use_layernorm).to(device)
    ids, mask = _prompts(spec, tokenizer, vocab, spec["batch"])
    ids, mask = torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def gen(n):
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)
        if gpu:
            torch.cuda.synchronize()
        return out

    results = {"impl": "torch", "batch": spec["batch"], "threads": torch.get_num_threads()}
    for name in ("plain", "steered"):
        handles = ref.add_steering_hooks(model, ebms, spec["eta"], spec["steps"]) if name == "steered" else []
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        first = time.perf_counter(); gen(spec["short"]); first = time.perf_counter() - first
        t_short, t_long = _time(lambda: gen(spec["short"])), _time(lambda: gen(spec["long"]))
        results[name] = {"compile_s": first - t_short,
                         "ms_per_token": 1000 * (t_long - t_short) / (spec["long"] - spec["short"]),
                         "gen_s_long": t_long}
        if gpu:
            results[name]["peak_bytes"] = int(torch.cuda.max_memory_allocated())
        for h in handles:
            h.remove()
    if gpu:
        results["peak_bytes"] = max(results[n]["peak_bytes"] for n in ("plain", "steered"))
    return results


def _worker(spec_json):
    spec = json.loads(spec_json)
    result = run_jax(spec) if spec["impl"] == "jax" else run_torch(spec)
    report(result)


def main(argv):
    del argv
    if FLAGS.worker:
        return _worker(FLAGS.worker)
    spec = dict(SETUPS[FLAGS.setup])
    if FLAGS.batch_sizes:
        spec["batch_sizes"] = tuple(int(b) for b in FLAGS.batch_sizes.split(","))
    if FLAGS.layers:
        spec["layers"] = tuple(int(b) for b in FLAGS.layers.split(","))
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONPATH=ROOT)
    rows = []
    for batch in spec["batch_sizes"]:
        for impl in FLAGS.impls.split(","):
            rows.append(run_worker(__file__, dict(spec, batch=batch, impl=impl), env))
            print(json.dumps(rows[-1]), flush=True)
    print_table(spec, rows)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"setup": FLAGS.setup, "spec": spec, "rows": rows}, f, indent=1)


def print_table(spec, rows):
    print(f"\nsetup={FLAGS.setup}  layers={len(spec['layers'])} x steps={spec['steps']}  "
          f"tokens {spec['short']}->{spec['long']}  date={time.strftime('%Y-%m-%d')}")
    header = ("| impl | batch | plain ms/tok | steered ms/tok | steered÷plain | steered tok/s | "
              "compile s (plain/steered) | peak GiB |")
    print(header)
    print("|---" * 8 + "|")
    by_batch = {}
    for r in rows:
        p, s = r["plain"], r["steered"]
        tok_s = 1000 * r["batch"] / s["ms_per_token"]
        peak = r.get("peak_bytes", 0) / 2**30
        print(f"| {r['impl']} | {r['batch']} | {p['ms_per_token']:.2f} | {s['ms_per_token']:.2f} | "
              f"{s['ms_per_token'] / p['ms_per_token']:.3f} | {tok_s:.1f} | "
              f"{p['compile_s']:.1f} / {s['compile_s']:.1f} | {peak:.1f} |")
        by_batch.setdefault(r["batch"], {})[r["impl"]] = r
    for batch, impls in by_batch.items():
        if "jax" in impls and "torch" in impls:
            j, t = impls["jax"], impls["torch"]
            print(f"batch {batch}: JAX÷PyTorch tokens/s  plain {t['plain']['ms_per_token'] / j['plain']['ms_per_token']:.2f}x"
                  f"  steered {t['steered']['ms_per_token'] / j['steered']['ms_per_token']:.2f}x")
        j = impls.get("jax")
        if j and "read_bandwidth" in j:
            bound = 1000 * j["weight_bytes"] / j["read_bandwidth"]
            print(f"batch {batch}: weight-read bound {bound:.1f} ms/token ({j['weight_bytes'] / 1e6:.0f} MB "
                  f"weights at {j['read_bandwidth'] / 1e9:.1f} GB/s read); JAX plain "
                  f"{j['plain']['ms_per_token'] / bound:.2f}x, steered {j['steered']['ms_per_token'] / bound:.2f}x the bound")
        if j and "copy_bandwidth" in j:
            bound = 1000 * j["weight_bytes"] / j["copy_bandwidth"]
            print(f"batch {batch}: HBM bound {bound:.2f} ms/token ({j['weight_bytes'] / 1e9:.1f} GB weights at "
                  f"{j['copy_bandwidth'] / 1e12:.2f} TB/s); JAX plain {j['plain']['ms_per_token'] / bound:.2f}x, "
                  f"steered {j['steered']['ms_per_token'] / bound:.2f}x the bound")


if __name__ == "__main__":
    app.run(main)
