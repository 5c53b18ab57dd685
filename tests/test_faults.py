"""Fault injection through the real command lines: every bad input or damaged file ends with one
error line and a non-zero exit before anything expensive, and no run ever reports a result made
under other settings than the ones it names."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import eds_jax
from eds_jax import EBM, EBMSpec

from conftest import ROOT, flip_one_bit, kill_once_written, save_test_steering

MISSING_MODEL = "no_such_model.gguf"


def run(script, *args, cwd=ROOT):
    command = [sys.executable, *(["-m", script] if script.startswith("eds_jax.") else
                                 [os.path.join(ROOT, script)]), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def one_error_line(proc, expected: str) -> str:
    """The run failed with exactly one line on stderr that says `expected`, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert expected in lines[0], lines[0]
    return lines[0]


def _ebms(width, layers, seed=0):
    return {l: EBM.init(EBMSpec.simple(width, 16), jax.random.PRNGKey(seed + l)) for l in layers}


def test_steer_decode_bad_inputs_fail_in_one_line_before_the_model(tmp_path):
    good = tmp_path / "good"
    save_test_steering(good, _ebms(576, (3, 5)), system="Be careful.")
    no_system = tmp_path / "no_system"
    shutil.copytree(good, no_system)
    meta_path = no_system / "metadata" / "metadata"
    meta = json.loads(meta_path.read_text())
    del meta["system"]
    meta_path.write_text(json.dumps(meta))
    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    flip_one_bit(str(flipped))
    (tmp_path / "bad_utf8.txt").write_bytes(b"How do I bake bread?\n\xff\xfe broken\n")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a torch file" * 10)
    model = f"--model={tmp_path / MISSING_MODEL}"
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["--prompt=Hi", "--limit=-1"], "--limit=-1: expected a count >= 0"),
        (["--prompt=Hi", f"--ebms={good}", "--torch_ebm=3:x.pt"], "give --ebms or --torch_ebm, not both"),
        (["--prompt=Hi", "--torch_ebm=three:x.pt"], "expected LAYER:PATH"),
        (["--prompt=Hi", f"--ebms={good}", "--layers=a,b"], "expected layer numbers"),
        ([f"--prompts={tmp_path / 'bad_utf8.txt'}"], "not UTF-8 text"),
        (["--prompt=Hi", f"--ebms={no_system}"], "lacks ['system']"),
        (["--prompt=Hi", f"--ebms={flipped}"], "do not match the digest"),
        (["--prompt=Hi", f"--ebms={good}", "--layers=4"], "no saved EBM for [4]"),
        (["--prompt=Hi", f"--ebms={good}", "--num_steps=-1"], "--num_steps=-1: expected >= 0"),
        (["--prompt=Hi", "--output=/proc/out.jsonl"], "cannot create a file in '/proc'"),
    ]
    for args, expected in cases:
        line = one_error_line(run("steer_decode.py", model, *args), expected)
        assert MISSING_MODEL not in line, args  # failed before the model was looked for
    # needs the model's config (not its weights): the EBMs' width and layers
    wide = tmp_path / "wide"
    save_test_steering(wide, _ebms(64, (3, 5)))
    one_error_line(run("steer_decode.py", "--prompt=Hi", f"--ebms={wide}"), "EBM input width 64 != model hidden size 576")
    narrow = tmp_path / "narrow"
    save_test_steering(narrow, _ebms(576, (3, 40)))
    one_error_line(run("steer_decode.py", "--prompt=Hi", f"--ebms={narrow}"), "out of range")
    line = one_error_line(run("steer_decode.py", "--prompt=Hi", f"--torch_ebm=3:{tmp_path / 'garbage.pt'}"),
                          "not a PyTorch state-dict file")
    assert "weights_only" not in line
    long_prompt = "word " * 9000  # longer than SmolLM2's 8192 positions, caught from the tokenizer
    one_error_line(run("steer_decode.py", f"--prompt={long_prompt}", "--max_new_tokens=8"),
                   "+ max_new_tokens=8 does not fit the model's 8192 positions")
    truncated = tmp_path / "truncated.gguf"
    data = open(eds_jax_smollm2_path(), "rb").read()
    truncated.write_bytes(data[:len(data) // 3])
    one_error_line(run("steer_decode.py", "--prompt=Hi", f"--model={truncated}"), "truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["wide", "narrow", "truncated.gguf"])


def eds_jax_smollm2_path():
    import models
    return models.smollm2_gguf_path()


def test_train_ebm_rejects_bad_training_settings_up_front(tmp_path, tiny_chat_model):
    base = ["--config=configs/tiny.py", f"--config.model.source={tiny_chat_model}"]
    for override, expected in (("--config.train.learning_rate=nan", "learning_rate=nan: expected a finite number > 0"),
                               ("--config.train.learning_rate=-1", "learning_rate=-1.0: expected a finite number > 0"),
                               ("--config.train.val_fraction=0", "val_fraction=0.0: expected a fraction in (0, 1)"),
                               ("--config.train.epochs=0", "train.epochs=0: expected a whole number >= 1"),
                               ("--config.train.checkpoint_every_s=-5", "checkpoint_every_s=-5.0: expected seconds >= 0"),
                               ("--config.ebm.hidden_dim=0", "EBM widths must be positive")):
        one_error_line(run("train_ebm.py", *base, override, f"--workdir={tmp_path / 'w'}"), expected)
        assert not (tmp_path / "w").exists(), override


def test_evaluate_rejects_a_negative_limit_and_a_changed_ebm_dir(tmp_path):
    one_error_line(run("eds_jax.evaluate", "--methods=baseline", "--limit=-1", "--fluency_threshold=2",
                       f"--output_dir={tmp_path / 'out'}"), "limit=-1: expected a count >= 0")
    one_error_line(run("eds_jax.evaluate", "--methods=baseline", "--fluency_threshold=2",
                       "--output_dir=/proc/eval"), "cannot create a file in '/proc'")
    save_test_steering(tmp_path / "e", _ebms(576, (3,)), judge={"fluency_threshold": 2.0})
    flip_one_bit(str(tmp_path / "e"))
    one_error_line(run("eds_jax.evaluate", f"--ebms={tmp_path / 'e'}", "--methods=baseline,eds",
                       f"--output_dir={tmp_path / 'out'}"), "do not match the digest")
    assert not (tmp_path / "out").exists()


def test_stale_training_checkpoints_are_never_reused_under_other_settings(tmp_path):
    from eds_jax.training import infonce
    rng = np.random.RandomState(0)
    x = rng.randn(48, 3, 16).astype(np.float32)
    labels = (rng.rand(48) > 0.5).astype(np.int8)
    x[labels == 1] += 0.5
    spec = EBMSpec.simple(16, 8)
    mesh = infonce.make_mesh(1, 1)

    def train(lr, epochs=2, data=x):
        cfg = infonce.TrainConfig(epochs=epochs, batch_size=8, learning_rate=lr, temperature=0.1, seed=0)
        return infonce.train_layers(data, labels, [0, 1, 2], spec, cfg, 0.25, mesh, str(tmp_path), log=lambda *_: None)

    first = train(1e-3)
    again = train(1e-3)  # the same run: resumed from its finished checkpoint, nothing retrained
    assert len(again["history"]) == len(first["history"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, first["params"], again["params"])
    other = train(3e-3)  # another learning rate: its own checkpoints, trained from the start
    assert [h["epoch"] for h in other["history"]] == [h["epoch"] for h in first["history"]]
    assert not np.allclose(jax.tree_util.tree_leaves(other["params"])[0],
                           jax.tree_util.tree_leaves(first["params"])[0])
    moved = train(1e-3, data=x + 0.1)  # other activations (another collection): afresh as well
    assert not np.allclose(jax.tree_util.tree_leaves(moved["params"])[0],
                           jax.tree_util.tree_leaves(first["params"])[0])
    assert len(os.listdir(tmp_path / "checkpoints")) == 3
    bad = x.copy()
    bad[0, 1] = np.inf
    with pytest.raises(FloatingPointError, match="not finite at epoch 1, layers \\[1\\]"):
        train(1e-3, data=bad)


def test_resumed_steer_decode_never_mixes_ebms(tmp_path, tiny_chat_model):
    """Kill a run, retrain into the same --ebms directory, rerun the same command: the output is
    made wholly with the new EBMs (the old partial rows are dropped), and every row says so."""
    ebms_dir = tmp_path / "ebms"
    save_test_steering(ebms_dir, _ebms(64, (1, 2)), eta=2.0)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me about topic {i}." for i in range(6)) + "\n")
    out = tmp_path / "out.jsonl"
    args = [sys.executable, os.path.join(ROOT, "steer_decode.py"), f"--model={tiny_chat_model}",
            f"--prompts={prompts}", f"--ebms={ebms_dir}", "--batch_size=2", "--max_new_tokens=24",
            f"--output={out}"]
    partial = tmp_path / "out.jsonl.partial"
    kill_once_written(args, partial)
    assert partial.exists() and not out.exists()
    save_test_steering(ebms_dir, _ebms(64, (1, 2), seed=7), eta=3.0, overwrite=True)  # retrained in place
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" not in again.stderr
    digest = eds_jax.load_ebms(str(ebms_dir))[1]["params_sha256"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert {r["steering"]["params_sha256"] for r in rows} == {digest}
    assert {json.dumps(r["steering"]["eta"]) for r in rows} == {json.dumps({"1": 3.0, "2": 3.0})}
    # a damaged partial file is kept aside and the run starts afresh
    partial.write_text('{"run": "x"}\n{"prompt": "broken\n')
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "out.jsonl.partial.corrupt").exists() and not partial.exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A write that fails half-way (disk full at the rename, say) leaves neither the target nor
    its temporary file."""
    from eds_jax.common import files

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        files.write_jsonl(str(tmp_path / "out.jsonl"), [{"a": 1}])
    assert list(tmp_path.iterdir()) == []


def test_decoding_rejects_out_of_vocabulary_ids_and_a_nan_temperature(tiny_chat_model):
    import models
    pre = models.load_pretrained(tiny_chat_model, dtype="float32")
    vocab = pre.config.vocab_size
    for ids, message in ((np.array([[1, 2, vocab]]), f"token ids in \\[1, {vocab}\\]"),
                         (np.array([[-1, 2, 3]]), "token ids in \\[-1, 3\\]")):
        with pytest.raises(ValueError, match=message):
            eds_jax.steered_generate(pre, ids, max_new_tokens=2)
    with pytest.raises(ValueError, match="finite temperature"):
        eds_jax.steered_generate(pre, np.array([[1, 2, 3]]), max_new_tokens=2, temperature=float("nan"))
