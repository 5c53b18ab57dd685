"""EBM training: resume, determinism, meshes, multi-process, labels, and train_ebm.py end to end."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from eds_jax.training import infonce
from eds_jax.training.collect import Collection, LabelError, check_labels, label
from eds_jax.core.ebm import EBMSpec
from conftest import ROOT

SYNTHETIC = textwrap.dedent("""
    import numpy as np
    def synthetic(n=96, layers=3, dim=16, seed=0):
        rng = np.random.RandomState(seed)
        labels = (rng.rand(n) < 0.55).astype(np.int8)
        x = rng.randn(n, layers, dim).astype(np.float32)
        x[:, :, 0] += 1.5 * (2 * labels[:, None] - 1) * np.arange(1, layers + 1)  # separable, more so deeper
        return x, labels
""")
exec(SYNTHETIC)


def train(workdir, epochs, mesh=None, seed=0):
    x, labels = synthetic()
    spec = EBMSpec.complex(16, (32, 16), 0.15, True)
    cfg = infonce.TrainConfig(epochs=epochs, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=seed)
    return infonce.train_layers(x, labels, [0, 1, 2], spec, cfg, 0.25, mesh or infonce.make_mesh(1, 1),
                                 str(workdir), log=lambda *_: None)


def flat(params):
    import jax
    return np.concatenate([np.asarray(v).ravel() for v in jax.tree_util.tree_leaves(params)])


def test_training_learns_and_reports_metrics(tmp_path):
    result = train(tmp_path, 6)
    assert len(result["history"]) == 6 * 3
    assert result["metrics"]["auc"][2] > 0.9
    assert set(result["counts"]) == {"train_good", "train_bad", "val_good", "val_bad"}


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    full = train(tmp_path / "full", 6)
    train(tmp_path / "killed", 3)  # the run stops after epoch 3's checkpoint ...
    resumed = train(tmp_path / "killed", 6)  # ... and a restart picks up from there
    np.testing.assert_array_equal(flat(resumed["params"]), flat(full["params"]))
    assert resumed["history"] == full["history"]


def test_checkpoints_are_thinned_by_time_and_the_last_epoch_is_always_saved(tmp_path):
    x, labels = synthetic()
    spec = EBMSpec.complex(16, (32, 16), 0.15, True)
    cfg = infonce.TrainConfig(epochs=5, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=0)

    def steps(every):
        infonce.train_layers(x, labels, [0, 1, 2], spec, cfg, 0.25, infonce.make_mesh(1, 1),
                             str(tmp_path / str(every)), log=lambda *_: None, checkpoint_every_s=every)
        (folder,) = (tmp_path / str(every) / "checkpoints").iterdir()
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    assert steps(0) == [4, 5]  # every epoch (orbax keeps the newest two)
    assert steps(3600) == [5]
    with pytest.raises(ValueError, match=r"checkpoint_every_s=-1: expected seconds >= 0"):
        steps(-1)


def test_fixed_seed_is_deterministic(tmp_path):
    a, b, c = train(tmp_path / "a", 3), train(tmp_path / "b", 3), train(tmp_path / "c", 3, seed=1)
    np.testing.assert_array_equal(flat(a["params"]), flat(b["params"]))
    assert not np.array_equal(flat(a["params"]), flat(c["params"]))


def test_meshes_give_the_same_training(tmp_path):
    code = SYNTHETIC + textwrap.dedent(f"""
        import json, sys, numpy as np, jax
        sys.path.insert(0, {ROOT!r})
        from eds_jax.training import infonce
        from eds_jax.core.ebm import EBMSpec
        x, labels = synthetic()
        out = {{}}
        for name, (data, model) in {{"d4m2": (4, 2), "d1": (1, 1)}}.items():
            cfg = infonce.TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=0)
            r = infonce.train_layers(x, labels, [0, 1, 2], EBMSpec.complex(16, (32, 16), 0.15, True), cfg,
                                      0.25, infonce.make_mesh(data, model), {str(tmp_path)!r} + "/" + name,
                                      log=lambda *_: None)
            out[name] = {{"losses": [h["train_loss"] for h in r["history"]],
                          "params": [float(v) for v in np.concatenate(
                              [np.asarray(l).ravel() for l in jax.tree_util.tree_leaves(r["params"])])]}}
        print(json.dumps(out))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["d4m2"]["losses"], out["d1"]["losses"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["d4m2"]["params"], out["d1"]["params"], rtol=1e-5, atol=1e-5)


def test_labels_and_missing_classes():
    assert [label("benign", False), label("benign", True), label("harmful", True), label("harmful", False)] == [1, 0, 1, 0]
    def collection(kinds, refused):
        labels = np.array([label(k, r) for k, r in zip(kinds, refused)], np.int8)
        return Collection(["p"] * len(kinds), kinds, ["r"] * len(kinds), np.array(refused), labels,
                          np.zeros((len(kinds), 1, 1), np.float32))
    with pytest.raises(LabelError, match="no negatives"):
        check_labels(collection(["benign", "harmful"], [False, True]))
    with pytest.raises(LabelError, match="no positives"):
        check_labels(collection(["benign", "harmful"], [True, False]))
    check_labels(collection(["benign", "benign"], [False, True]))


def test_validation_auc_equals_counting_every_pair():
    """The sorted AUC against the definition: every (positive, negative) pair, ties within the
    float32 tolerance counted half."""
    rng = np.random.RandomState(0)
    pos, neg = rng.randn(3, 200).astype(np.float32), (rng.randn(3, 150) + 0.5).astype(np.float32)
    neg[0, :40] = pos[0, :40]  # exact ties
    neg[1, :30] = pos[1, :30] + 1e-7  # ties within the tolerance
    neg[2] = np.round(neg[2], 1)  # many ties among the negatives
    pos[2] = np.round(pos[2], 1)
    p, n = pos.astype(np.float64), neg.astype(np.float64)
    diff = p[:, :, None] - n[:, None, :]
    tie = np.abs(diff) <= 1e-6 * (1 + np.abs(p).max(axis=1) + np.abs(n).max(axis=1))[:, None, None]
    expected = np.mean((diff < 0) & ~tie, axis=(1, 2)) + 0.5 * np.mean(tie, axis=(1, 2))
    auc = infonce.validation_metrics(pos, neg, 0.1)["auc"]
    np.testing.assert_allclose(auc, expected, rtol=0, atol=1e-12)
    assert 0.55 < auc.min() and auc.max() < 0.75


def test_split_by_group_keeps_a_prompts_rows_together():
    from eds_jax.training.infonce import split_indices
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0] * 3)
    # one row per group: the same split as without groups
    for part, grouped in zip(split_indices(labels, 0.2, 0), split_indices(labels, 0.2, 0, np.arange(30))):
        np.testing.assert_array_equal(part, grouped)
    groups = np.concatenate([np.arange(30), np.arange(30), np.arange(30)])  # three rows a prompt
    train, val = split_indices(np.tile(labels, 3), 0.2, 0, groups)
    assert not set(groups[train]) & set(groups[val])
    assert len(set(groups[val])) == 6 and len(val) == 18
    with pytest.raises(ValueError, match="group 1 holds rows of both labels"):
        split_indices(np.array([1, 0, 1, 1]), 0.5, 0, np.array([0, 1, 1, 2]))


def run_script(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_train_ebm_end_to_end_then_steer_decode(tmp_path, tiny_chat_model):
    workdir = tmp_path / "run"
    args = ["--config=configs/tiny.py", f"--config.model.source={tiny_chat_model}", f"--workdir={workdir}",
            "--config.sweep.etas=(0.02,0.08)", "--config.sweep.max_new_tokens=4",
            "--config.steer.eta_scale=hidden_norm", "--config.sweep.energy_floor_quantiles=(0.5,)",
            "--config.sweep.benign.prompts.limit=8", "--config.sweep.harmful.prompts.limit=8",
            # half of them held back to confirm the search's best settings
            "--config.sweep.confirm_fraction=0.5", "--config.sweep.confirm_candidates=2",
            # the plain grid here (the adaptive search has its own tests: tests/test_search.py)
            "--config.sweep.refine_rounds=0", "--config.sweep.screen_fraction=0",
            "--config.gate.enabled=True", "--config.gate.folds=3", "--config.gate.layers=(1,2)",
            # the EBMs learn at the first 3 answer tokens too; the gate stays on prompt states
            "--config.collect.generated_states=3"]
    proc = run_script("train_ebm.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "label counts" in proc.stdout and "steering setting chosen on validation prompts" in proc.stdout
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 * 3  # epochs x layers of the tiny config
    for png in ("layer_quality.png", "energy_histograms.png", "sweep_tradeoff.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG"
    import eds_jax
    ebms, meta = eds_jax.load_ebms(str(workdir / "ebms"))
    assert len(ebms) == 2 and meta["training"]["selected_by"] == "auc" and meta["model"]["hidden_size"] == 64
    assert meta["training"]["generated_states"] == 3
    generated = np.load(next((workdir / "collect").glob("generated-*.npz")))
    rows = sum(meta["training"]["split_counts"].values())
    assert rows == len(generated["valid"]) + int(generated["valid"].sum()) > len(generated["valid"])
    # the deployment, the judge and the sweep travel with the EBMs
    assert meta["system"] == "Be careful." and meta["judge"]["fluency_threshold"] > 0
    # the prompt gate, fitted on the collection's kinds, is saved with them and steers the decode
    assert meta["gate"]["layer"] in (1, 2) and "prompt gate: block" in proc.stdout
    assert eds_jax.load_steering(str(workdir / "ebms")).gate.layer == meta["gate"]["layer"]
    table = meta["sweep"]["table"]
    # eta swept as a fraction of each layer's median hidden-state norm over the collection
    assert [r.get("eta_fraction") for r in table] == [None, 0.02, 0.08, 0.02, 0.08]
    assert table[0]["benign_n"] == 4  # the search's half
    confirmation = meta["sweep"]["confirmation"]
    assert confirmation["prompts"] == {"benign": 4, "harmful": 4} and len(confirmation["table"]) in (0, 2, 3)
    assert all(r["benign_n"] == 4 and r["harmful_n"] == 4 for r in confirmation["table"])
    assert [r.get("energy_floor_quantile") for r in table] == [None, None, None, 0.5, 0.5]
    chosen = [r for r in table if r["setting"] == meta["sweep"]["chosen"]][0]
    steer = meta["steering"]
    assert steer["eta_scale"] == "hidden_norm" and sorted(steer["hidden_norm"]) == sorted(map(str, ebms))
    activations = np.load(next((workdir / "collect").glob("activations-*.npz")))["activations"]
    for layer in ebms:
        norm = np.median(np.linalg.norm(activations[:, layer].astype(np.float32), axis=-1))
        assert steer["hidden_norm"][str(layer)] == pytest.approx(norm, rel=1e-5)
    if meta["sweep"]["chosen"] == "unsteered":
        assert steer["unsteered"] and steer["eta_fraction"] == 0.0
    else:
        assert steer["eta_fraction"] == chosen["eta_fraction"]
        assert steer["eta"] == pytest.approx({k: chosen["eta_fraction"] * v
                                              for k, v in steer["hidden_norm"].items()})
    floor = meta["steering"]["energy_floor"]  # per layer, when the chosen row has one
    assert (floor is not None) == ("energy_floor_quantile" in chosen)
    if floor is not None:
        assert sorted(int(k) for k in floor) == sorted(int(k) for k in ebms)
    swept = [json.loads(line) for line in (workdir / "sweep_responses.jsonl").read_text().splitlines()]
    assert len(swept) == 5 * 8
    out = tmp_path / "steered.jsonl"
    proc = run_script("steer_decode.py", f"--model={tiny_chat_model}", f"--ebms={workdir / 'ebms'}",
                      "--prompt=Hello there", "--max_new_tokens=6", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())
    if steer["unsteered"]:  # the search kept the model unsteered: no steered decode, and it says so
        assert row["steered"] is None and "kept the model unsteered" in proc.stderr
    else:
        assert row["layers"] == sorted(int(k) for k in ebms) and row["steered"] is not None
        assert row["steering"]["params_sha256"] == meta["params_sha256"]
        assert row["steering"]["gate"]["layer"] == meta["gate"]["layer"] and row["gate_open"] in (True, False)
    assert row["system"] == "Be careful."  # decoded under the EBMs' own deployment
    # a rerun reuses collection and the finished training
    again = run_script("train_ebm.py", *args)
    assert again.returncode == 0 and "steering setting chosen" in again.stdout


def test_train_ebm_bad_input(tmp_path, tiny_chat_model):
    base = ["--config=configs/tiny.py", f"--config.model.source={tiny_chat_model}"]
    unknown = run_script("train_ebm.py", *base, "--config.train.no_such_field=1", f"--workdir={tmp_path / 'a'}")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "config.train has no field 'no_such_field'; its fields are ['batch_size'," in unknown.stderr
    source = run_script("train_ebm.py", *base, "--config.data.benign.nosuch.limit=3", f"--workdir={tmp_path / 'a'}")
    assert source.returncode != 0 and "Traceback" not in source.stderr
    assert "config.data.benign has no field 'nosuch'; its fields are ['prompts']" in source.stderr
    assert not (tmp_path / "a").exists()
    states = run_script("train_ebm.py", *base, "--config.collect.generated_states=8", f"--workdir={tmp_path / 'a'}")
    assert states.returncode != 0 and "Traceback" not in states.stderr
    assert ("config.collect.generated_states=8: expected a whole number in [0, max_new_tokens=8)"
            in states.stderr), states.stderr[-2000:]
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    proc = run_script("train_ebm.py", *base, f"--workdir={tmp_path / 'b'}",
                      f"--config.data.harmful.prompts.path={empty}")
    assert proc.returncode != 0 and "no prompts in the file" in proc.stderr, proc.stderr[-2000:]
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"instruction": "fine"}\n{"instruction": "broken\n')
    proc = run_script("train_ebm.py", *base, f"--workdir={tmp_path / 'c'}",
                      f"--config.data.benign.prompts.path={malformed}")
    assert proc.returncode != 0 and "malformed.jsonl, line 2: invalid JSON" in proc.stderr, proc.stderr[-2000:]
    # read before anything is written: no empty work directory is left behind
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    proc = run_script("train_ebm.py", *base, f"--workdir={tmp_path / 'd'}", "--config.sweep.etas=(1.0,)",
                      f"--config.sweep.benign.prompts.path={tmp_path / 'missing.jsonl'}")
    assert proc.returncode != 0 and "missing.jsonl' does not exist" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "d").exists()
    proc = run_script("train_ebm.py", *base, f"--workdir={tmp_path / 'e'}", "--config.steer.eta_scale=norm")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "config.steer.eta_scale must be one of ('absolute', 'hidden_norm'), got 'norm'" in proc.stderr
    assert not (tmp_path / "e").exists()
    (tmp_path / "a_file").write_text("x")
    proc = run_script("train_ebm.py", *base, f"--workdir={tmp_path / 'a_file'}")
    assert proc.returncode != 0 and "is a file; expected a directory" in proc.stderr, proc.stderr[-2000:]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COLLECT_PROMPTS = ([f"Tell me about topic {i}." + " Please." * i for i in range(5)],
                   [f"Explain how to do bad thing {i}." for i in range(4)])


def _start_pair(tmp_path, attempt, *args):
    """Two worker processes on a fresh port; their exit codes, stdouts and stderrs."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    port, worker = str(_free_port()), os.path.join(ROOT, "tests", "distributed_worker.py")
    paths = [(tmp_path / f"out{attempt}.{i}", tmp_path / f"err{attempt}.{i}") for i in range(2)]
    logs = [(open(out, "w"), open(err, "w")) for out, err in paths]
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", port, str(tmp_path / f"multi{attempt}"), *args],
                              stdout=out, stderr=err, text=True, env=env) for i, (out, err) in enumerate(logs)]
    deadline = time.monotonic() + 240
    try:  # files, not pipes: a full pipe would stall one process while the other waits for it
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # reported below with both processes' logs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for out, err in logs:
            out.close(), err.close()
    return [(p.returncode, out.read_text(), err.read_text()) for p, (out, err) in zip(procs, paths)]


def _pair_report(runs):
    """Both processes' exit codes and the tails of their stdouts and stderrs."""
    return "\n".join(f"process {i}: exit {rc}\n{out[-500:]}\n{err[-2000:]}" for i, (rc, out, err) in enumerate(runs))


def run_two_processes(tmp_path, *args):
    """Start two worker processes x 2 CPU devices over 127.0.0.1 (jax.distributed); their RESULTs.

    One pair runs at a time (a lock shared by the xdist workers), so two pairs never race for ports.
    A pair that fails is started once more on a new port: silently when a process never joined the
    coordinator (the port picked here was taken before the coordinator bound it), with a warning
    that carries both processes' logs otherwise; a second failure fails the test.
    """
    import fcntl
    import tempfile
    import warnings
    with open(os.path.join(tempfile.gettempdir(), "eds_jax_distributed_test.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for attempt in range(2):
            runs = _start_pair(tmp_path, attempt, *args)
            if all(rc == 0 for rc, _, _ in runs):
                break
            if attempt == 0 and all("INITIALIZED" in out for _, out, _ in runs):
                warnings.warn("a two-process run failed after both processes joined; starting it again:\n"
                              + _pair_report(runs))
    assert all(rc == 0 for rc, _, _ in runs), _pair_report(runs)
    results = [json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:]) for _, out, _ in runs]
    assert all(r["devices"] == 4 and r["processes"] == 2 for r in results)
    return results


def test_two_processes_with_jax_distributed_match_one_process(tmp_path):
    """Two processes x 2 CPU devices over 127.0.0.1 (jax.distributed) train like one process."""
    results = run_two_processes(tmp_path, "train")
    single = train(tmp_path / "single", 3)
    for r in results:
        np.testing.assert_allclose(r["losses"], [h["train_loss"] for h in single["history"]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r["params"], flat(single["params"]), rtol=1e-5, atol=1e-5)


def test_two_processes_split_collection_and_match_one_process(tmp_path, tiny_chat_model):
    """Collection with batch rows split over two processes gives every process the whole result."""
    import models
    from eds_jax.training.collect import collect
    from eds_jax.judging.refusal import is_refusal
    results = run_two_processes(tmp_path, "collect", tiny_chat_model)
    pre = models.load_pretrained(tiny_chat_model, dtype="float32")
    single = collect(pre, *COLLECT_PROMPTS, str(tmp_path / "single"),
                     {"max_new_tokens": 6, "batch_size": 6, "system": None, "judge": "substring"}, is_refusal)
    for r in results:
        assert r["responses"] == single.responses
        np.testing.assert_allclose(np.reshape(r["activations"], single.activations.shape), single.activations,
                                   rtol=1e-5, atol=1e-5)


def test_sigkill_mid_run_then_restart_equals_uninterrupted(tmp_path):
    """A training process killed with SIGKILL after some epochs resumes to the same EBMs."""
    import signal
    import time
    code = SYNTHETIC + textwrap.dedent(f"""
        import sys, numpy as np, jax
        sys.path.insert(0, {ROOT!r})
        from eds_jax.training import infonce
        from eds_jax.core.ebm import EBMSpec
        x, labels = synthetic()
        cfg = infonce.TrainConfig(epochs=12, batch_size=8, learning_rate=3e-3, temperature=0.1, seed=0)
        r = infonce.train_layers(x, labels, [0, 1, 2], EBMSpec.complex(16, (32, 16), 0.15, True), cfg, 0.25,
                                  infonce.make_mesh(1, 1), sys.argv[1], log=lambda *_: None,
                                  checkpoint_every_s=0)
        np.save(sys.argv[2], np.concatenate([np.asarray(l).ravel() for l in jax.tree_util.tree_leaves(r["params"])]))
    """)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed), str(tmp_path / "never.npy")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((killed / "checkpoints").glob("*/3")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((killed / "checkpoints").glob("*/3")) and not (tmp_path / "never.npy").exists()
    for workdir, out in ((killed, "resumed.npy"), (tmp_path / "clean", "clean.npy")):
        done = subprocess.run([sys.executable, "-c", code, str(workdir), str(tmp_path / out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "clean.npy"))


@pytest.mark.parametrize("name", ["smollm2_135m", "llama2_7b_chat", "llama31_8b_instruct", "qwen3_1_7b",
                                  "qwen3_14b", "tiny", "smollm2_135m_shared"])
def test_configs_have_every_field_group(name):
    import importlib
    cfg = importlib.import_module(f"configs.{name}").get_config()
    for group in ("model", "data", "collect", "ebm", "train", "steer", "mesh", "distributed"):
        assert group in cfg, group
    assert cfg.steer.eta >= 0 and cfg.train.select_by in infonce.SELECT_BY
    for kind in ("benign", "harmful"):
        assert all({"path", "field", "limit"} <= set(s) for s in cfg.data[kind].values())
