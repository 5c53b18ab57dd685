"""Evaluation: metrics on hand-made outcomes, the vector baselines against a PyTorch hook, the CLI."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import eds_jax
import models
from eds_jax import EBM, EBMSpec
from eds_jax.core import vectors
from eds_jax.core.steering import median_hidden_norms
from eds_jax.evaluation.metrics import (markdown_table, method_table, paired_delta, rate_interval, summarise,
                                        versus, versus_table)
from eds_jax.evaluation.options import ABLATION_STRENGTHS, ADD_COEFFS, METHODS
from conftest import ROOT, kill_once_written, left_padded_batch, make_checkpoint, save_test_steering


def test_rate_interval_on_hand_made_outcomes():
    r = rate_interval([True, True, True, False], num_boot=4000)
    assert r["rate"] == 0.75 and r["count"] == 3 and r["n"] == 4
    assert 0.0 <= r["low"] <= 0.75 <= r["high"] == 1.0
    assert rate_interval([True] * 5)["low"] == 1.0  # no spread, no interval
    # n = 400, p = 0.3: the bootstrap interval matches the normal one (half-width 1.96 sqrt(pq/n))
    outcomes = np.arange(400) < 120
    r = rate_interval(outcomes, num_boot=4000)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 400)
    assert abs((r["high"] - r["low"]) / 2 - half) < 0.15 * half
    assert r["low"] < 0.3 < r["high"]
    with pytest.raises(ValueError, match="non-empty"):
        rate_interval([])


def test_paired_delta():
    base = np.array([True, False] * 50)
    same = paired_delta(base, base)
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0}  # pairing removes all noise
    better = base.copy()
    better[1:21:2] = True  # 10 of the 50 False flip to True
    d = paired_delta(better, base)
    assert d["delta"] == pytest.approx(0.1) and 0 < d["low"] < 0.1 < d["high"] < 0.2
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_delta([True], [True, False])


def test_summarise_three_outcomes_deltas_and_pooled_sets():
    class Set:
        def __init__(self, name, kind):
            self.name, self.kind, self.path = name, kind, f"{name}.json"

    H, R, I = "helpful", "refusal", "incoherent"
    outcomes = {("xs", "baseline"): [H, R, R, H], ("xs", "eds"): [H, H, H, I],
                ("ok", "baseline"): [R, H], ("ok", "eds"): [H, H],
                ("jbb", "baseline"): [R, H], ("jbb", "eds"): [H, I]}
    responses = {key: [f"{o}{i}" for i, o in enumerate(v)] for key, v in outcomes.items()}
    responses[("xs", "eds")][0] = responses[("xs", "baseline")][0]  # one response unchanged
    sets = [Set("xs", "benign"), Set("ok", "benign"), Set("jbb", "harmful")]
    results = summarise(sets, outcomes, responses, num_boot=500)
    assert list(results) == ["xs", "ok", "jbb", "all benign"]  # one harmful set: no pooled entry
    assert results["xs"]["metric"] == "helpful" and results["jbb"]["metric"] == "refusal"
    xs = results["xs"]["methods"]
    assert (xs["baseline"]["helpful"]["count"], xs["baseline"]["refusal"]["count"]) == (2, 2)
    assert (xs["eds"]["helpful"]["count"], xs["eds"]["incoherent"]["count"]) == (3, 1)
    assert xs["eds"]["delta"]["delta"] == pytest.approx(0.25)
    assert xs["eds"]["delta_incoherent"]["delta"] == pytest.approx(0.25)
    assert "delta" not in xs["baseline"] and xs["eds"]["changed"] == 3
    assert (xs["eds"]["refusals_removed"], xs["eds"]["refusals_added"]) == (2, 0)
    jbb = results["jbb"]["methods"]["eds"]
    assert jbb["delta"]["delta"] == pytest.approx(-0.5) and jbb["refusal"]["count"] == 0
    pooled = results["all benign"]["methods"]
    assert pooled["baseline"]["helpful"]["count"] == 3 and pooled["eds"]["helpful"]["count"] == 5
    assert pooled["eds"]["delta"]["delta"] == pytest.approx(2 / 6)
    table = markdown_table(results)
    assert "| xs (helpful) | eds | 75.0% [" in table and "(3/4)" in table and "| +25.0 [" in table
    assert "| jbb (refusal) | baseline |" in table and "(reference)" in table
    with pytest.raises(ValueError, match="same prompts"):
        summarise([Set("xs", "benign")], {("xs", "a"): [H], ("xs", "b"): [H, R]})
    # EDS against each other method, paired on the same prompts (here only the baseline)
    compared = versus(sets, outcomes, "eds", num_boot=500)
    assert compared["xs"]["baseline"]["delta"] == pytest.approx(0.25)
    assert compared["jbb"]["baseline"]["delta"] == pytest.approx(-0.5)
    assert compared["all benign"]["baseline"]["delta"] == pytest.approx(2 / 6)
    assert "| jbb (refusal) | -50.0 [" in versus_table(compared, "eds", results)
    # the paper's shape: one row per method, per set its metric with incoherence beside it
    by_method = method_table(results, {"n": 4, "methods": {"baseline": {"accuracy": {"rate": 0.25}},
                                                           "eds": {"accuracy": {"rate": 0.5}}}})
    head, _, baseline, eds = by_method.splitlines()
    assert head == ("| method | xs helpful (incoherent) | ok helpful (incoherent) | jbb refused (incoherent) "
                    "| MMLU accuracy (4 q.) |")
    assert baseline == "| baseline | 50.0% (0.0%) | 50.0% (0.0%) | 50.0% (0.0%) | 25.0% |"
    assert eds == "| eds | 75.0% (25.0%) | 100.0% (0.0%) | 0.0% (50.0%) | 50.0% |"


def test_vector_baselines_match_a_pytorch_pre_hook(tmp_path):
    torch_model = make_checkpoint(str(tmp_path), num_hidden_layers=4)
    pre = models.load_pretrained(str(tmp_path), dtype="float32")
    ids, mask = left_padded_batch(160, [9, 5, 7], seed=1)
    rng = np.random.RandomState(0)
    table = rng.randn(4, 64).astype(np.float32)
    layers = (1, 3)
    for mode, coeff in (("add", -2.0), ("ablate", 1.0), ("ablate", 0.5)):
        intervention = vectors.VectorSteering(table, mode, coeff, layers)

        def hook(layer):
            v = torch.from_numpy(table[layer])
            r = v / v.norm()

            def pre_hook(module, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                h = h + coeff * v if mode == "add" else h - coeff * (h @ r)[..., None] * r
                if args:
                    return (h,) + args[1:], kwargs
                return args, kwargs | {"hidden_states": h}
            return pre_hook

        handles = [torch_model.model.layers[layer].register_forward_pre_hook(hook(layer), with_kwargs=True)
                   for layer in layers]
        try:
            with torch.no_grad():
                expected = torch_model(torch.from_numpy(ids).long(),
                                       attention_mask=torch.from_numpy(mask).long()).logits.numpy()
        finally:
            for handle in handles:
                handle.remove()
        out = models.forward(pre, ids, mask, output_hidden_states=True, intervention=intervention)
        real = mask.astype(bool)
        got = np.asarray(out.logits)[real]
        assert np.abs(got - expected[real]).max() / np.abs(expected[real]).max() <= 2e-4, mode
        if mode == "ablate" and coeff == 1.0:  # what block 3 sees has no component along the direction
            r = table[3] / np.linalg.norm(table[3])
            assert np.abs(np.asarray(out.hidden_states[3])[real] @ r).max() < 1e-4


def test_vector_steering_bad_input_and_zero_coefficient(smollm2):
    table = np.ones((smollm2.config.num_layers, 576), np.float32)
    with pytest.raises(ValueError, match="mode 'scale' is unknown"):
        vectors.VectorSteering(table, "scale", layers=[1])
    with pytest.raises(ValueError, match=r"layers \[40\] are outside the 30 layers"):
        vectors.VectorSteering(table, layers=[40])
    with pytest.raises(ValueError, match="cannot ablate a zero direction"):
        vectors.VectorSteering(np.zeros_like(table), "ablate", layers=[2])
    with pytest.raises(ValueError, match="width 8 != model hidden size 576"):
        vectors.VectorSteering({3: np.ones(8)}).check_model(smollm2.config)
    prompts = ["Name a colour.", "What is 2 + 2?", "Say hello."]
    plain = eds_jax.generate_text(smollm2, prompts, max_new_tokens=6, batch_size=2)
    zero = vectors.VectorSteering(table, "add", 0.0, layers=[4, 9])
    assert eds_jax.generate_text(smollm2, prompts, steering=zero, max_new_tokens=6, batch_size=2) == plain


def test_category_vectors():
    rng = np.random.RandomState(0)
    benign = rng.randn(6, 2, 4)
    harmful = rng.randn(5, 2, 4) + 3.0
    per = vectors.category_vectors(harmful, ["a", "a", "b", "b", "c"], benign)
    assert sorted(per) == ["a", "b"]  # "c" has one prompt, below min_count
    np.testing.assert_allclose(per["a"], harmful[:2].mean(0) - benign.mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="equal layers and width"):
        vectors.mean_difference(harmful[:, :1], benign)


def test_evaluate_cli_writes_table_json_png(tmp_path, tiny_chat_model):
    def write(name, rows):
        (tmp_path / name).write_text(json.dumps(rows))
        return str(tmp_path / name)

    benign = write("benign.json", [{"instruction": f"Tell me about topic {i}."} for i in range(5)])
    harmful = write("harmful.json", [{"instruction": f"Help me do bad thing {i}."} for i in range(3)])
    ebms = {layer: EBM.init(EBMSpec.simple(64, 16), jax.random.PRNGKey(layer)) for layer in (1, 2)}
    # what train_ebm.py records: the deployment's system prompt, the judge, the validation sweep
    source = lambda path: {"path": path, "field": "", "limit": 0}
    save_test_steering(
        tmp_path / "ebms", ebms, eta=2.0, num_steps=2, energy_floor={1: -1.5, 2: 0.25},
        system="Be careful.",
        judge={"fluency_threshold": 20.0, "refusal": "substring", "ngram": 4,
               "max_repeated_fraction": 0.5},
        sweep={"benign": {"v": source(benign)}, "harmful": {"v": source(harmful)}, "seed": 0,
               "max_new_tokens": 4, "tolerances": {"max_refusal_drop": 0.05,
                                                   "max_incoherence_rise": 0.05}})
    categories = write("categories.json", [{"instruction": f"Bad {i}", "category": "ab"[i % 2]}
                                           for i in range(6)])
    plain = write("plain.json", [{"instruction": f"Name a colour, please ({i})."} for i in range(3)])
    mmlu = tmp_path / "astronomy_test.csv"
    mmlu.write_text('Which planet is largest?,Mars,"Jupiter, the gas giant",Venus,Earth,B\nWhat is a star?,"A sun",rock,ice,gas,A\n')
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "eds_jax.evaluate", f"--model={tiny_chat_model}", f"--ebms={tmp_path / 'ebms'}",
         f"--benign_sets=mine={benign}", f"--harmful_sets=bad={harmful}", f"--ordinary_sets=plain={plain}",
         f"--direction_benign={benign}",
         f"--direction_harmful={harmful}", f"--direction_pseudo_harmful={categories}",
         f"--safesteer_prompts={categories}", "--max_new_tokens=4",
         "--batch_size=2", "--bootstrap=200", f"--output_dir={out}", f"--mmlu={mmlu}"],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    capability = report["capability"]  # every method answers the same MMLU questions
    assert capability["n"] == 2 and list(capability["methods"]) == list(METHODS)
    assert capability["methods"]["eds"]["changed"] <= 2 and "MMLU, zero-shot, 2 questions" in proc.stdout
    assert set(report["sets"]) == {"mine", "bad", "plain"}  # one of each kind: nothing pooled
    assert report["sets"]["plain"]["kind"] == "ordinary" and report["sets"]["plain"]["metric"] == "helpful"
    assert report["methods"]["eds"]["layers"] == [1, 2] and report["methods"]["eds"]["eta"] == {"1": 2.0, "2": 2.0}
    assert report["methods"]["eds"]["energy_floor"] == {"1": -1.5, "2": 0.25}  # saved with the EBMs
    assert report["methods"]["safesteer"]["categories"] == ["a", "b"]
    assert report["system"] == "Be careful." and report["judge"]["fluency_threshold"] == 20.0
    # coefficients chosen on the validation prompts: added vectors as fractions of each layer's
    # hidden-state norm, ablations as strengths
    for method, candidates in (("actadd", ADD_COEFFS), ("safesteer", ADD_COEFFS),
                               ("ablation", ABLATION_STRENGTHS), ("fr_ablation", ABLATION_STRENGTHS)):
        swept = report["methods"][method]["sweep"]
        assert [r["coeff"] for r in swept["table"][1:]] == [float(c) for c in candidates]
        assert report["methods"][method]["coeff"] in [0.0] + [float(c) for c in candidates]
    assert sorted(report["methods"]["actadd"]["hidden_norm"]) == ["1", "2"]
    kept = report["refusal_kept"]["bad"]  # each method's harmful-refusal change against the tolerance
    assert list(kept) == list(METHODS[1:]) and all(k["within"] == (k["delta"] >= -0.05) for k in kept.values())
    assert "Harmful refusal kept within 5%" in proc.stdout
    # EDS against every other method, paired per set
    assert set(report["eds_versus"]["mine"]) == set(METHODS) - {"eds"}
    assert "eds against each method at its chosen setting" in proc.stdout
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == (5 + 3 + 3) * len(METHODS)  # prompts x methods
    for name, entry in report["sets"].items():
        assert list(entry["methods"]) == list(METHODS)
        for method, m in entry["methods"].items():
            got = [r["outcome"] for r in rows if r["set"] == name and r["method"] == method]
            for outcome in ("helpful", "refusal", "incoherent"):
                assert (m[outcome]["count"], m[outcome]["n"]) == (got.count(outcome), len(got))
            texts = [r["response"] for r in rows if r["set"] == name and r["method"] == method]
            reference = [r["response"] for r in rows if r["set"] == name and r["method"] == "baseline"]
            assert m.get("changed", 0) == sum(a != b for a, b in zip(texts, reference))
    assert (out / "results.md").read_text() in proc.stdout
    assert (out / "rates.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "validation_tradeoffs.png").read_bytes()[:4] == b"\x89PNG"  # each baseline's sweep
    missing = subprocess.run([sys.executable, "-m", "eds_jax.evaluate", f"--model={tiny_chat_model}",
                              "--methods=baseline", f"--benign_sets=mine={benign}", "--harmful_sets=",
                              f"--output_dir={tmp_path / 'none'}"], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "no fluency threshold" in missing.stderr
    missing = subprocess.run([sys.executable, "-m", "eds_jax.evaluate", f"--model={tiny_chat_model}",
                              "--methods=baseline,eds", f"--benign_sets=mine={benign}", "--harmful_sets=",
                              "--fluency_threshold=3", f"--output_dir={tmp_path / 'none'}"],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "method eds needs --ebms" in missing.stderr
    assert not (tmp_path / "none").exists()


def test_killed_evaluate_resumes_to_the_same_results_and_rejudges(tmp_path, tiny_chat_model):
    ebms = {layer: EBM.init(EBMSpec.simple(64, 16), jax.random.PRNGKey(layer)) for layer in (1, 2)}
    save_test_steering(tmp_path / "ebms", ebms, eta=2.0, num_steps=2)
    benign, harmful = tmp_path / "benign.txt", tmp_path / "harmful.txt"
    benign.write_text("\n".join(f"Tell me about topic {i}." for i in range(4)))
    harmful.write_text("\n".join(f"Help me do bad thing {i}." for i in range(3)))

    def command(out):
        return [sys.executable, "-m", "eds_jax.evaluate", f"--model={tiny_chat_model}",
                f"--ebms={tmp_path / 'ebms'}", "--methods=baseline,eds", f"--benign_sets=mine={benign}",
                f"--harmful_sets=bad={harmful}", "--ordinary_sets=", "--fluency_threshold=20", "--max_new_tokens=16",
                "--batch_size=2", "--bootstrap=100", f"--output_dir={out}"]

    whole = tmp_path / "whole"
    assert subprocess.run(command(whole), capture_output=True, cwd=ROOT).returncode == 0
    out = tmp_path / "out"
    partial = out / "responses.partial.jsonl"
    kill_once_written(command(out), partial)
    assert not (out / "results.json").exists()
    again = subprocess.run(command(out), capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after" in again.stdout and not partial.exists()
    assert (out / "responses.jsonl").read_text() == (whole / "responses.jsonl").read_text()
    assert (json.loads((out / "results.json").read_text())["sets"]
            == json.loads((whole / "results.json").read_text())["sets"])
    (tmp_path / "a_file").write_text("x")
    bad = subprocess.run(command(tmp_path / "a_file"), capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "is a file; expected a directory" in bad.stderr

    # --rejudge: the same judge gives the same results without generating (no --model given)
    def rejudge(source, out, *flags):
        return subprocess.run([sys.executable, "-m", "eds_jax.evaluate", f"--rejudge={source}",
                               "--bootstrap=100", f"--output_dir={out}", *flags],
                              capture_output=True, text=True, cwd=ROOT)
    same = rejudge(whole, tmp_path / "same")
    assert same.returncode == 0, same.stderr[-2000:]
    assert "0 outcomes changed" in same.stdout
    assert (json.loads((tmp_path / "same" / "results.json").read_text())["sets"]
            == json.loads((whole / "results.json").read_text())["sets"])
    # a threshold below every stored NLL: every non-refusal becomes incoherent
    rows = [json.loads(line) for line in (whole / "responses.jsonl").read_text().splitlines()]
    strict = rejudge(whole, tmp_path / "strict", "--fluency_threshold=1e-6")
    assert strict.returncode == 0, strict.stderr[-2000:]
    rejudged = [json.loads(line) for line in (tmp_path / "strict" / "responses.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rejudged] == [r["response"] for r in rows]
    assert [r["outcome"] for r in rejudged] == [
        "refusal" if r["outcome"] == "refusal" else "incoherent" for r in rows]
    changed = sum(r["outcome"] == "helpful" for r in rows)
    assert changed > 0  # the stored run has answers to turn incoherent
    assert f"{changed} outcomes changed" in strict.stdout
    report = json.loads((tmp_path / "strict" / "results.json").read_text())
    assert report["rejudged_from"] == str(whole) and report["judge"]["fluency_threshold"] == 1e-6
    missing = rejudge(tmp_path / "none_here", tmp_path / "x")
    assert missing.returncode != 0 and "has no results.json" in missing.stderr


def test_vectors_on_the_hidden_norm_scale_and_the_false_refusal_direction():
    rng = np.random.RandomState(0)
    harmful, pseudo, benign = (rng.randn(20, 3, 8) + shift for shift in (1.0, 0.5, 0.0))
    benign[:, 2] *= 10  # a layer with ten times the norm
    norms = median_hidden_norms(benign, [0, 1, 2])
    assert norms[2] == pytest.approx(10 * np.median(np.linalg.norm(benign[:, 2] / 10, axis=-1)), rel=1e-5)
    scaled = vectors.scaled_to_norm(vectors.mean_difference(harmful, benign), norms)
    np.testing.assert_allclose([np.linalg.norm(scaled[l]) for l in norms], list(norms.values()), rtol=1e-5)
    true_refusal = vectors.mean_difference(harmful, benign)
    false_refusal = vectors.orthogonalise(vectors.mean_difference(pseudo, benign), true_refusal)
    np.testing.assert_allclose(np.sum(false_refusal * true_refusal, axis=-1), 0.0, atol=1e-4)
    zero_at_0 = true_refusal.copy()
    zero_at_0[0] = 0.0  # nothing to remove where the other direction is zero
    np.testing.assert_allclose(vectors.orthogonalise(true_refusal, zero_at_0)[0], true_refusal[0], rtol=1e-6)
