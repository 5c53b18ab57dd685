"""Whole-prompt-set generation behind the over-cautious system prompt: JAX `generate_text` vs
transformers' `generate` with the same steering hooks, wall time end to end, in one run.

  python benchmarks/end_to_end.py                        # 128 shared prompts, 48 tokens, batch 16 and 32

Prompts: the first 96 OR-Bench-Hard validation prompts and the first 32 harmful validation prompts
(the public splits the package ships), each behind `eds_jax.core.deployment.OVER_CAUTIOUS_SYSTEM`, greedy, stopping
at EOS. Steering: 3 layers x 3 steps, EBM weights made once in PyTorch and loaded by both sides,
so the two implementations steer with the same energies. Each implementation runs in its own
subprocess. `generate_text` batches prompts by length (jax_given_order: in the given order;
jax_no_prefix: without shared-prefix reuse); torch_by_length gives transformers the same batches.
Timed: one warm-up pass over the whole set (compiles every bucket; its result is waited for), then
the best of `--repeats` passes, from strings to decoded strings (tokenisation, prefill, decode,
detokenisation).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # torch_reference: the PyTorch hook reference
from workers import report, run_worker  # noqa: E402  (benchmarks/, the script's own directory)
SPLITS = "data:public"  # eds_jax/datasets/public

flags.DEFINE_string("batch_sizes", "16,32", "batch sizes, comma-separated")
flags.DEFINE_integer("max_new_tokens", 48, "new tokens per prompt (fewer where EOS comes first)")
flags.DEFINE_integer("benign", 96, "OR-Bench-Hard validation prompts")
flags.DEFINE_integer("harmful", 32, "harmful validation prompts")
flags.DEFINE_integer("repeats", 2, "timed passes (best kept)")
flags.DEFINE_string("layers", "6,14,22", "steered layers")
flags.DEFINE_float("eta", 4.0, "steering step size")
flags.DEFINE_integer("steps", 3, "steering steps")
flags.DEFINE_string("impls", "jax,jax_given_order,jax_no_prefix,torch,torch_by_length",
                    "implementations, comma-separated: jax_given_order (by_length=False),"
                    " jax_no_prefix (reuse_prefix=False), torch_by_length (transformers with batches "
                    "of similar prompt lengths, as generate_text makes them)")
flags.DEFINE_string("worker", "", "internal: run one measurement (json spec) and print json")
flags.DEFINE_string("output", "", "also write the results as JSON here")
FLAGS = flags.FLAGS


def prompt_set(benign: int, harmful: int) -> list[str]:
    from eds_jax.datasets.prompt_files import load_prompts
    return (load_prompts(f"{SPLITS}/or_bench_hard_val.json", "instruction")[:benign]
            + load_prompts(f"{SPLITS}/harmful_val.json", "instruction")[:harmful])


def make_ebms(directory: str, hidden: int, layers) -> dict:
    """One simple EBM per steered layer, random (seeded) PyTorch weights saved as .pt files."""
    import torch
    from torch_reference import TorchSimpleEBM
    paths = {}
    for layer in layers:
        torch.manual_seed(layer)
        paths[layer] = os.path.join(directory, f"ebm_{layer}.pt")
        torch.save(TorchSimpleEBM(hidden, 512).state_dict(), paths[layer])
    return paths


def _passes(run, repeats):
    first = time.perf_counter(); texts = run(); first = time.perf_counter() - first
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter(); again = run(); best = min(best, time.perf_counter() - start)
        assert again == texts, "a repeated pass gave different text"
    return texts, first, best


def run_jax(spec):
    import jax
    import models
    import eds_jax
    from eds_jax.core import deployment
    pre = models.load_pretrained(models.smollm2_gguf_path(), dtype="float32")
    ebms = {int(layer): eds_jax.load_torch_ebm(path, architecture="simple",
                                               input_dim=pre.config.hidden_size, hidden_dim=512)
            for layer, path in spec["ebms"].items()}
    steering = eds_jax.Steering(ebms, eta=spec["eta"], num_steps=spec["steps"])
    prompts = prompt_set(spec["benign"], spec["harmful"])
    result = {"impl": spec["impl"], "device": str(jax.devices()[0].device_kind), "batch": spec["batch"]}
    for name, st in (("plain", None), ("steered", steering)):
        def run():
            texts, outs = eds_jax.generate_text(
                pre, prompts, steering=st, system=deployment.OVER_CAUTIOUS_SYSTEM,
                max_new_tokens=spec["max_new_tokens"], batch_size=spec["batch"], return_outputs=True,
                reuse_prefix=spec["impl"] != "jax_no_prefix",
                by_length=spec["impl"] != "jax_given_order")
            jax.block_until_ready(outs)
            return texts
        texts, first, best = _passes(run, spec["repeats"])
        result[name] = {"first_s": first, "wall_s": best, "texts": texts}
    return result


def run_torch(spec):
    import torch
    from transformers import AutoModelForCausalLM
    import models
    import torch_reference as ref
    from eds_jax.core import deployment
    from eds_jax.core.decoding import chat_prompts, length_batches
    from models.gguf_file import GGUFFile
    path = models.smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
    tokenizer = GGUFFile(path).tokenizer()
    tokenizer.padding_side = "left"
    ebms = {}
    for layer, p in spec["ebms"].items():
        ebms[int(layer)] = ref.TorchSimpleEBM(model.config.hidden_size, 512)
        ebms[int(layer)].load_state_dict(torch.load(p))
        ebms[int(layer)].eval()
    prompts = prompt_set(spec["benign"], spec["harmful"])
    texts_in = chat_prompts(tokenizer, prompts, deployment.OVER_CAUTIOUS_SYSTEM)
    # torch_by_length: batches of similar prompt lengths, as generate_text makes them
    order = (length_batches([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts_in],
                            spec["batch"], by_length=spec["impl"] == "torch_by_length"))
    eos = [t for t in {tokenizer.eos_token_id, model.generation_config.eos_token_id} if t is not None]
    result = {"impl": spec["impl"], "batch": spec["batch"], "threads": torch.get_num_threads()}
    for name in ("plain", "steered"):
        handles = (ref.add_steering_hooks(model, ebms, spec["eta"], spec["steps"])
                   if name == "steered" else [])

        def run():
            texts = [None] * len(prompts)
            for rows in order:
                enc = tokenizer([texts_in[i] for i in rows], return_tensors="pt", padding=True,
                                add_special_tokens=False)
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=spec["max_new_tokens"], do_sample=False,
                                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
                for i, text in zip(rows, tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                                skip_special_tokens=True)):
                    texts[i] = text
            return texts
        texts, first, best = _passes(run, spec["repeats"])
        result[name] = {"first_s": first, "wall_s": best, "texts": texts}
        for h in handles:
            h.remove()
    return result


def main(argv):
    del argv
    if FLAGS.worker:
        spec = json.loads(FLAGS.worker)
        result = run_torch(spec) if spec["impl"].startswith("torch") else run_jax(spec)
        report(result)
        return
    layers = [int(x) for x in FLAGS.layers.split(",")]
    scratch = tempfile.mkdtemp(prefix="e2e_ebms_")
    spec = dict(max_new_tokens=FLAGS.max_new_tokens, benign=FLAGS.benign, harmful=FLAGS.harmful,
                repeats=FLAGS.repeats, eta=FLAGS.eta, steps=FLAGS.steps,
                ebms=make_ebms(scratch, 576, layers))
    env = dict(os.environ, PYTHONPATH=ROOT)
    rows = []
    for batch in (int(b) for b in FLAGS.batch_sizes.split(",")):
        for impl in FLAGS.impls.split(","):
            rows.append(run_worker(__file__, dict(spec, batch=batch, impl=impl), env))
            print(json.dumps({k: ({m: round(v, 2) for m, v in r.items() if m != "texts"}
                                  if isinstance(r, dict) else r) for k, r in rows[-1].items()}), flush=True)
    print_table(spec, rows)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"spec": spec, "rows": rows}, f, indent=1)


def print_table(spec, rows):
    n = spec["benign"] + spec["harmful"]
    print(f"\n{n} prompts behind the over-cautious system prompt, {spec['max_new_tokens']} new tokens, "
          f"steered: {len(spec['ebms'])} layers x {spec['steps']} steps, date={time.strftime('%Y-%m-%d')}")
    print("| impl | batch | plain s | steered s | steered÷plain | first pass s (plain/steered) |")
    print("|---|---|---|---|---|---|")
    by_batch = {}
    for r in rows:
        p, s = r["plain"], r["steered"]
        print(f"| {r['impl']} | {r['batch']} | {p['wall_s']:.1f} | {s['wall_s']:.1f} | "
              f"{s['wall_s'] / p['wall_s']:.2f} | {p['first_s']:.1f} / {s['first_s']:.1f} |")
        by_batch.setdefault(r["batch"], {})[r["impl"]] = r
    for batch, impls in by_batch.items():
        for torch_impl in ("torch", "torch_by_length"):
            torch_row = impls.get(torch_impl)
            for impl in ("jax", "jax_given_order", "jax_no_prefix"):
                if impl in impls and torch_row:
                    j = impls[impl]
                    same = {m: sum(a == b for a, b in zip(j[m]["texts"], torch_row[m]["texts"]))
                            for m in ("plain", "steered")}
                    print(f"batch {batch}: {impl} ÷ {torch_impl} speed  plain "
                          f"{torch_row['plain']['wall_s'] / j['plain']['wall_s']:.2f}x  steered "
                          f"{torch_row['steered']['wall_s'] / j['steered']['wall_s']:.2f}x  (same text: "
                          f"plain {same['plain']}/{n}, steered {same['steered']}/{n})")
        for other, what in (("jax_no_prefix", "prefix reuse"), ("jax_given_order", "batches by length")):
            if "jax" in impls and other in impls:
                a, b = impls["jax"], impls[other]
                print(f"batch {batch}: {what} speed-up  plain {b['plain']['wall_s'] / a['plain']['wall_s']:.2f}x"
                      f"  steered {b['steered']['wall_s'] / a['steered']['wall_s']:.2f}x")


if __name__ == "__main__":
    app.run(main)
