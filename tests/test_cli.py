"""steer_decode.py end to end, and the prompt-file readers it uses."""
import json
import os
import subprocess
import sys

import jax
import pytest
import torch

from eds_jax import EBM, EBMSpec
from eds_jax.datasets.prompt_files import PromptFileError, load_prompts
from torch_reference import TorchSimpleEBM
from conftest import ROOT, kill_once_written, save_test_steering


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "steer_decode.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_steer_decode_with_orbax_ebms_writes_jsonl(tmp_path):
    ebms = {layer: EBM.init(EBMSpec.simple(576, 32), jax.random.PRNGKey(layer)) for layer in (5, 15)}
    save_test_steering(tmp_path / "ebms", ebms, eta=3.0, num_steps=2)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"instruction": p}) for p in
                                 ["How do I kill a Python process?", "Name a fruit."]) + "\n")
    out = tmp_path / "out.jsonl"
    proc = run_cli(f"--prompts={prompts}", f"--ebms={tmp_path / 'ebms'}", "--max_new_tokens=8",
                   f"--output={out}", "--batch_size=1", "--compare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["How do I kill a Python process?", "Name a fruit."]
    for row in rows:
        assert row["baseline"] and row["steered"] and row["layers"] == [5, 15]
        assert row["energy_after"] < row["energy_before"]
    assert "--- steered" in proc.stdout


def test_steer_decode_torch_ebm_and_bad_input(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / "ebm.pt")
    torch.save(TorchSimpleEBM(576, 32).state_dict(), path)
    out = tmp_path / "out.jsonl"
    proc = run_cli("--prompt=Say hi.", f"--torch_ebm=7:{path}", "--ebm_architecture=simple",
                   "--ebm_hidden_dim=32", "--max_new_tokens=4", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["layers"] == [7]
    bad = run_cli("--prompt=Say hi.", f"--torch_ebm=7:{path}", "--ebm_architecture=simple",
                  "--ebm_hidden_dim=64", "--max_new_tokens=4", f"--output={tmp_path / 'bad.jsonl'}")
    assert bad.returncode != 0 and "network.0.weight has shape (32, 576), expected (64, 576)" in bad.stderr
    assert not (tmp_path / "bad.jsonl").exists()
    negative = run_cli("--prompt=Say hi.", f"--torch_ebm=7:{path}", "--ebm_architecture=simple",
                       "--ebm_hidden_dim=32", "--eta=-1", "--max_new_tokens=4")
    assert negative.returncode != 0 and "eta must be >= 0" in negative.stderr


def test_prompt_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    assert load_prompts(str(tmp_path / "a.txt")) == ["one", "two"]
    (tmp_path / "b.json").write_text(json.dumps(["x", {"prompt": "y"}, {"instruction": "z"}]))
    assert load_prompts(str(tmp_path / "b.json")) == ["x", "y", "z"]
    (tmp_path / "c.jsonl").write_text('{"instruction": "ok"}\n{"instruction": \n')
    with pytest.raises(PromptFileError, match=r"c.jsonl, line 2: invalid JSON"):
        load_prompts(str(tmp_path / "c.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"instruction": "ok"}\n{"text": "no field"}\n')
    with pytest.raises(PromptFileError, match=r"d.jsonl, line 2: no string field"):
        load_prompts(str(tmp_path / "d.jsonl"))
    (tmp_path / "e.csv").write_text("prompt,category\nhello,a\n\"bye\",b,extra\n")
    with pytest.raises(PromptFileError, match=r"e.csv, row 3: more cells than columns"):
        load_prompts(str(tmp_path / "e.csv"))
    (tmp_path / "f.jsonl").write_text("\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(str(tmp_path / "f.jsonl"))
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_shipped_data_matches_its_card_and_resolves_from_anywhere(tmp_path, monkeypatch):
    """Every file the data card lists loads through a `data:` path with the count the card gives,
    from any working directory; nothing the package ships is missing from the card."""
    import re
    card = open(os.path.join(ROOT, "eds_jax", "datasets", "README.md")).read()
    listed = {}
    for row in re.findall(r"^\| ([a-z_{},0-9/ ]+\.jsonl?) \| ([0-9 /]+) \|", card, re.M):
        names, counts = row
        stem = names.split(" / ")
        counts = [int(c) for c in counts.split(" / ")]
        files = []
        for name in stem:
            m = re.match(r"(.*)\{(.*)\}(.*)", name.strip())
            files += [m.group(1) + part + m.group(3) for part in m.group(2).split(",")] if m else [name.strip()]
        listed.update(zip(files, counts))
    monkeypatch.chdir(tmp_path)  # data: paths never depend on the working directory
    shipped = {}
    for folder in ("own", "public"):
        for name in os.listdir(os.path.join(ROOT, "eds_jax", "datasets", folder)):
            if name != "mmlu":  # multiple-choice questions, read by eds_jax.evaluation.capability
                shipped[name] = len(load_prompts(f"data:{folder}/{name}"))
    assert shipped == listed
    with pytest.raises(PromptFileError, match="outside the shipped data folder"):
        load_prompts("data:../../setup.py")


def test_steer_decode_rejects_bad_flags_before_loading_the_model(tmp_path):
    """Each bad flag is named in one line, before the (here missing) model would load, and
    nothing is written."""
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    missing_model = f"--model={tmp_path / 'no_such_model.gguf'}"
    cases = [(["--prompt="], "--prompt='' is empty"),
             (["--prompt=Hi", f"--output={tmp_path / 'a_dir'}"], "is a directory"),
             (["--prompt=Hi", f"--output={tmp_path / 'a_file' / 'out.jsonl'}"], "is a file"),
             (["--prompt=Hi", f"--ebms={tmp_path / 'missing_ebms'}"], "is not a directory"),
             (["--prompt=Hi", "--eta=inf"], "--eta must be finite"),
             (["--prompt=Hi", "--eta=-2"], "--eta must be >= 0"),
             (["--prompt=Hi", "--max_new_tokens=0"], "--max_new_tokens=0: expected >= 1"),
             (["--prompt=Hi", "--prompts=x.txt"], "not both")]
    for args, message in cases:
        proc = run_cli(missing_model, *args)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr[-2000:])
        assert "no_such_model" not in proc.stderr, args  # failed before the model load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]
    assert not list((tmp_path / "a_dir").iterdir())


def test_killed_steer_decode_resumes_to_the_same_output(tmp_path, tiny_chat_model):
    """Finished batches are kept in OUTPUT.partial; a run killed with SIGKILL and restarted with the
    same flags ends with the same file as an uninterrupted run."""
    ebms = {layer: EBM.init(EBMSpec.simple(64, 16), jax.random.PRNGKey(layer)) for layer in (1, 2)}
    save_test_steering(tmp_path / "ebms", ebms, eta=2.0, num_steps=2)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me about topic {i}." for i in range(6)) + "\n")

    def args(out):
        return [os.path.join(ROOT, "steer_decode.py"), f"--model={tiny_chat_model}", f"--prompts={prompts}",
                f"--ebms={tmp_path / 'ebms'}", "--batch_size=2", "--max_new_tokens=24", f"--output={out}"]

    whole = tmp_path / "whole.jsonl"
    assert subprocess.run([sys.executable, *args(whole)], capture_output=True, cwd=ROOT).returncode == 0
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    kill_once_written([sys.executable, *args(out)], partial)
    done = len(partial.read_text().splitlines()) - 1  # the first line names the run
    assert 2 <= done < 6 and not out.exists()
    again = subprocess.run([sys.executable, *args(out)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming after {done} finished prompts" in again.stderr
    assert out.read_text() == whole.read_text() and not partial.exists()
