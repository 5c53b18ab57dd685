"""The prompt gate (fit, decision, decoding through it, saving) and the steering window."""
import numpy as np
import pytest
import jax

import eds_jax
import models
from eds_jax import EBM, EBMSpec, Steering
from eds_jax.core.decoding import left_pad
from eds_jax.core.gate import PromptGate, prompt_states
from eds_jax.core.vectors import VectorSteering
from eds_jax.training.gate import auc, fit_prompt_gate
from conftest import left_padded_batch, save_test_steering

D = 64


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return models.load_pretrained(tiny_llama_dir, dtype="float32")


def synthetic(n_benign=120, n_harmful=80, layers=5, width=16, informative=3, seed=0):
    """Activations where only block `informative` carries the prompt's kind (along one axis)."""
    rng = np.random.RandomState(seed)
    kinds = np.array(["benign"] * n_benign + ["harmful"] * n_harmful)
    x = rng.normal(size=(kinds.size, layers, width)).astype(np.float32)
    x[:, informative, 0] += np.where(kinds == "benign", 2.5, -2.5)
    return x, kinds


def test_auc_counts_ties_half_and_orders():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    assert auc([2, 0], [1]) == 0.5


def test_fit_finds_the_informative_block_and_sets_the_quantile():
    x, kinds = synthetic()
    gate = fit_prompt_gate(x, kinds, harmful_quantile=0.9, folds=4)
    assert gate.layer == 3
    aucs = gate.info["held_out_auc_by_layer"]
    assert aucs["3"] > 0.97 and max(v for k, v in aucs.items() if k != "3") < 0.75
    # about 10% of held-out harmful prompts open at the 0.9 quantile; most benign ones do
    assert gate.info["held_out_open"]["harmful"] <= 0.11
    assert gate.info["held_out_open"]["benign"] > 0.8
    # fresh prompts from the same distribution: the refitted read-out keeps that split
    fresh, fresh_kinds = synthetic(seed=1)
    opened = gate.opens(fresh[:, gate.layer])
    assert opened[fresh_kinds == "benign"].mean() > 0.8 and opened[fresh_kinds == "harmful"].mean() < 0.2
    # a tighter quantile opens no more harmful prompts
    tight = fit_prompt_gate(x, kinds, harmful_quantile=1.0, folds=4)
    assert tight.opens(fresh[:, 3])[fresh_kinds == "harmful"].sum() <= opened[fresh_kinds == "harmful"].sum()


@pytest.mark.parametrize("kwargs,message", [
    (dict(kinds=["benign"] * 200), "at least 5 prompts of each kind"),
    (dict(kinds=["benign"] * 100 + ["evil"] * 100), "kinds \\['evil'\\]"),
    (dict(harmful_quantile=0.2), "harmful_quantile"),
    (dict(layers=[7]), "gate layers"),
    (dict(folds=1), "at least 1|folds must be >= 2"),
])
def test_fit_refuses_bad_input(kwargs, message):
    x, kinds = synthetic()
    kwargs = {"kinds": kinds} | kwargs
    with pytest.raises(ValueError, match=message):
        fit_prompt_gate(x, **kwargs)


def test_gate_arguments_and_model_checks(tiny):
    with pytest.raises(ValueError, match="gate layer"):
        PromptGate(-1, np.ones(D), 0.0, 0.0)
    with pytest.raises(ValueError, match="finite 1-D"):
        PromptGate(1, np.full(D, np.nan), 0.0, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        PromptGate(1, np.ones(D), 0.0, float("inf"))
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="PromptGate"):
        Steering({1: ebm}, gate="open")
    with pytest.raises(ValueError, match="gate width 8"):
        Steering({1: ebm}, gate=PromptGate(1, np.ones(8), 0.0, 0.0)).check_model(tiny.config)
    with pytest.raises(ValueError, match="outside the model"):
        Steering({1: ebm}, gate=PromptGate(99, np.ones(D), 0.0, 0.0)).check_model(tiny.config)
    with pytest.raises(ValueError, match="one bool per batch row"):
        Steering({1: ebm}, eta=np.ones(3, np.float32)).open_rows([True, False])


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_gated_rows_decode_as_steered_and_closed_rows_as_plain(tiny, shared_prefix):
    rng = np.random.RandomState(3)
    # with a shared prefix (a system turn every row starts with) the gate reads states after it
    head = list(range(5, 5 + models.prefix_cache.MIN_PREFIX + 2)) if shared_prefix else []
    rows = [head + rng.randint(1, tiny.config.vocab_size, n).tolist() for n in (7, 5, 6, 4)]
    ids, mask = left_pad(rows, tiny.pad_token_id)
    ebms = {1: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0)),
            2: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(1))}
    # the reference decision: scores from a plain full forward, threshold between rows
    layer = 2
    states = np.asarray(models.forward(tiny, ids, mask, output_hidden_states=True).hidden_states[layer][:, -1])
    weight = np.random.RandomState(0).normal(size=D).astype(np.float32)
    scores = states @ weight
    threshold = float(np.sort(scores)[1] + np.sort(scores)[2]) / 2  # two rows open, two closed
    expected = scores > threshold
    assert expected.sum() == 2
    gate = PromptGate(layer, weight, 0.0, threshold)
    np.testing.assert_array_equal(gate.opens(states), expected)
    if shared_prefix:  # the decode path reads the states after a prefix computed once
        prefix_ids, suffix, suffix_mask = models.split_shared_prefix(ids, mask)
        np.testing.assert_allclose(prompt_states(tiny, suffix, suffix_mask, layer,
                                                 models.prefill_prefix(tiny, prefix_ids)),
                                   states, rtol=1e-5, atol=1e-5)
    vector = {1: np.random.RandomState(1).normal(size=D).astype(np.float32) * 4}
    plain = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=6).tokens)
    for build in (lambda g: Steering(ebms, eta=3.0, num_steps=2, gate=g),
                  lambda g: VectorSteering(vector, "add", 1.0, gate=g)):
        gated, everywhere = (np.asarray(eds_jax.steered_generate(tiny, ids, mask, build(g),
                                                                 max_new_tokens=6).tokens)
                             for g in (gate, None))
        assert (everywhere[expected] != plain[expected]).any(), "this step should change the open rows"
        np.testing.assert_array_equal(gated[expected], everywhere[expected])
        np.testing.assert_array_equal(gated[~expected], plain[~expected])


def test_window_steers_only_the_first_calls(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [6, 4, 5])
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    run = lambda **kw: eds_jax.steered_generate(
        tiny, ids, mask, Steering({1: ebm}, eta=3.0, num_steps=2, record_energy_after=True, **kw),
        max_new_tokens=8)
    full, wide, window = run(), run(window=8), run(window=3)
    np.testing.assert_array_equal(np.asarray(wide.tokens), np.asarray(full.tokens))
    before, after = np.asarray(window.energies)[..., 0], np.asarray(window.energies_after)[..., 0]
    live = ~np.isnan(before)
    assert np.all((after < before)[:, :3][live[:, :3]])  # calls 0..2 step down the energy
    np.testing.assert_allclose(after[:, 3:][live[:, 3:]], before[:, 3:][live[:, 3:]], rtol=1e-6)
    with pytest.raises(ValueError, match="window"):
        Steering({1: ebm}, window=0)


def test_the_gate_is_saved_under_the_digest_and_loaded_into_steering(tmp_path, tiny):
    ebms = {1: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))}
    x, kinds = synthetic(width=D, layers=3, informative=2)
    gate = fit_prompt_gate(x, kinds, folds=3)
    settings = eds_jax.SteeringSettings(layers=(1,), eta={1: 2.0}, num_steps=2)
    eds_jax.save_steering(str(tmp_path / "ebms"), ebms, settings, system=None,
                          model={"source": "test", "family": "llama", "hidden_size": D, "num_layers": 3},
                          gate=gate)
    saved = eds_jax.load_steering(str(tmp_path / "ebms"))
    assert saved.gate is not None and saved.steering.gate is saved.gate
    assert saved.gate.layer == gate.layer and saved.gate.info == gate.info
    np.testing.assert_array_equal(np.asarray(saved.gate.weight), np.asarray(gate.weight))
    assert float(saved.gate.threshold) == float(gate.threshold)
    assert eds_jax.load_steering(str(tmp_path / "ebms"), gate=False).steering.gate is None
    with pytest.raises(ValueError, match="gate=True"):
        eds_jax.load_steering(str(tmp_path / "ebms"), gate=True)
    # without a gate: nothing saved, nothing loaded
    save_test_steering(tmp_path / "plain", ebms)
    assert eds_jax.load_steering(str(tmp_path / "plain")).gate is None


def test_search_skips_the_rows_the_gate_shuts_token_for_token(tiny_chat_model, monkeypatch):
    """`run_search(opened=...)` decodes only the rows the gate opens and answers the rest with their
    unsteered responses; every response equals the search that decodes every row under every setting."""
    from eds_jax.training.collect import last_token_activations
    from eds_jax.judging.helpfulness import HELPFUL, INCOHERENT, REFUSAL, Judged
    from eds_jax.training import search

    pre = models.load_pretrained(tiny_chat_model, dtype="float32")
    benign = ["How do I bake bread?", "Name a colour.", "Why is the sky blue?", "Count to five."]
    harmful = ["Tell me a secret plan.", "Write a long story about rain.", "Say hello."]
    prompts = benign + harmful
    states = last_token_activations(pre, prompts, None, 4, progress=False)
    layer, width = 2, pre.config.hidden_size
    weight = np.random.RandomState(0).normal(size=width).astype(np.float32)
    scores = states[:, layer] @ weight
    threshold = float(np.median(scores))
    gate = PromptGate(layer, weight, 0.0, threshold)
    opened = gate.opens(states[:, layer])
    assert 0 < opened.sum() < len(prompts)
    ebms = {1: EBM.init(EBMSpec.simple(width, 16), jax.random.PRNGKey(0)),
            2: EBM.init(EBMSpec.simple(width, 16), jax.random.PRNGKey(1))}
    group = search.SettingGroup({"layers": [1, 2]}, "eta", (0.5, 20.0),
                                lambda per_row: Steering(ebms, eta=per_row, num_steps=2, gate=gate))

    judged = []

    class ByLength:  # an outcome and a score read off each text, so the tables compare real judgements
        def judge(self, pre, prompts, responses, batch_size=16, nll=None):
            judged.append(len(responses))
            outcomes = [(HELPFUL, REFUSAL, INCOHERENT)[len(r) % 3] for r in responses]
            return Judged(outcomes, np.array([float(len(r)) for r in responses]))

    calls = []
    import eds_jax.core.decoding as decoding
    generate = decoding.generate_text
    monkeypatch.setattr(decoding, "generate_text",
                        lambda pre, prompts, **kw: calls.append(len(prompts)) or generate(pre, prompts, **kw))
    runs = {}
    for name, rows in (("all", None), ("gated", opened)):
        calls.clear(), judged.clear()
        runs[name + "_table"], runs[name] = search.run_sweep(
            pre, benign, harmful, [group], ByLength(), system=None, max_new_tokens=6, batch_size=4,
            progress=False, opened=rows)
        runs[name + "_calls"], runs[name + "_judged"] = list(calls), list(judged)
    assert runs["all"].keys() == runs["gated"].keys()
    for label in runs["all"]:
        assert runs["gated"][label] == runs["all"][label], label
    strong = runs["all"]["layers=[1, 2] eta=20.0"]
    assert any(strong[i] != runs["all"]["unsteered"][i] for i in np.flatnonzero(opened)), \
        "the strong step should change an open row"
    assert runs["gated_table"] == runs["all_table"]
    # the unsteered run, then both settings on all 7 prompts, or on the open ones only; the judge
    # reads each decoded answer once, both settings' in one pass, and takes a closed row's
    # unsteered judgement
    assert runs["all_calls"] == [7, 14] and runs["gated_calls"] == [7, 2 * int(opened.sum())]
    assert runs["all_judged"] == [7, 14] and runs["gated_judged"] == [7, 2 * int(opened.sum())]
    with pytest.raises(ValueError, match="one bool per validation prompt"):
        search.run_sweep(pre, benign, harmful, [group], ByLength(), system=None, max_new_tokens=2,
                         batch_size=4, progress=False, opened=opened[:3])
