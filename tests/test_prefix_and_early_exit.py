"""Shared-prefix KV reuse and early exit: the same tokens, energies and activations as a full
prefill running every step, on the tiny random Llama and on SmolLM2 behind a system prompt."""
import dataclasses

import jax
import numpy as np
import pytest

import eds_jax
import models
from eds_jax.core import decoding, deployment
from eds_jax.training.collect import last_token_activations
from eds_jax.core.ebm import EBM, EBMSpec
from eds_jax.core.steering import Steering
from eds_jax.core.vectors import VectorSteering
from models import prefix_cache
from models import pretrained


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return models.load_pretrained(tiny_llama_dir, dtype="float32")


def row_error(a, b):
    """The largest relative error of one [D] row of `a` against the same row of `b`."""
    return float((np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)).max())


def shared_prefix_batch(vocab, prefix_length, suffix_lengths, seed=0):
    """Left-padded rows that all start with the same `prefix_length` random tokens."""
    rng = np.random.RandomState(seed)
    prefix = rng.randint(0, vocab, prefix_length)
    rows = [np.concatenate([prefix, rng.randint(0, vocab, n)]) for n in suffix_lengths]
    return decoding.left_pad(rows, pad_id=0)


def test_split_shared_prefix_on_hand_made_rows():
    ids = np.array([[0, 0, 5, 6, 7, 8],
                    [5, 6, 7, 9, 1, 2],
                    [0, 5, 6, 7, 3, 4]])
    mask = (np.arange(6)[None] >= np.array([2, 0, 1])[:, None]).astype(np.int32)
    assert prefix_cache.shared_prefix_length(ids, mask) == 3
    prefix, suffix, suffix_mask = prefix_cache.split_shared_prefix(ids, mask, min_length=3)
    assert prefix.tolist() == [5, 6, 7]
    # each row's own tokens, still left-padded, in the last max(suffix) columns
    assert [row[m.astype(bool)].tolist() for row, m in zip(suffix, suffix_mask)] == [[8], [9, 1, 2], [3, 4]]
    assert prefix_cache.split_shared_prefix(ids, mask, min_length=4) is None
    # identical rows still keep their last token out of the prefix; one row shares nothing
    same = np.array([[1, 2, 3], [1, 2, 3]])
    assert prefix_cache.shared_prefix_length(same, np.ones_like(same)) == 2
    assert prefix_cache.shared_prefix_length(same[:1], np.ones_like(same[:1])) == 0
    assert prefix_cache.shared_prefix_length(np.array([[1, 2], [3, 2]]), np.ones((2, 2))) == 0


def random_ebms(layers, width, seed=0):
    return {layer: EBM.init(EBMSpec.simple(width, 16), jax.random.PRNGKey(seed + layer))
            for layer in layers}


@pytest.mark.parametrize("kind", ["plain", "eds", "eds_per_row", "vector_per_row", "vector_uniform_rows",
                                  "ablate"])
def test_prefix_reuse_equals_full_prefill_on_tiny(tiny, kind):
    ids, mask = shared_prefix_batch(tiny.config.vocab_size, 40, [3, 11, 1, 7], seed=3)
    d = tiny.config.hidden_size
    steering = {
        "plain": None,
        "eds": Steering(random_ebms((0, 2), d), eta=0.7, num_steps=2, record_energy_after=True),
        "eds_per_row": Steering(random_ebms((1,), d), eta=np.array([0.0, 0.5, 1.0, 2.0]), num_steps=3),
        "vector_per_row": VectorSteering({1: np.random.RandomState(0).randn(d)}, coeff=np.array([0, -1, 1, 2.5])),
        "ablate": VectorSteering({0: np.random.RandomState(1).randn(d), 2: np.ones(d)}, mode="ablate"),
        # one candidate of a sweep: per-row coefficients all equal, the prefix prefilled once
        "vector_uniform_rows": VectorSteering({1: np.random.RandomState(0).randn(d)}, coeff=np.full(4, -1.5)),
    }[kind]
    if kind == "vector_uniform_rows":  # the prefix is prefilled once, under the one coefficient
        assert steering.batch_rows == 4 and steering.prefix_intervention().batch_rows is None
    full = eds_jax.steered_generate(tiny, ids, mask, steering=steering, max_new_tokens=12,
                                    reuse_prefix=False)
    reused = eds_jax.steered_generate(tiny, ids, mask, steering=steering, max_new_tokens=12)
    np.testing.assert_array_equal(np.asarray(reused.tokens), np.asarray(full.tokens))
    np.testing.assert_array_equal(np.asarray(reused.lengths), np.asarray(full.lengths))
    if full.energies is not None:
        np.testing.assert_allclose(np.asarray(reused.energies), np.asarray(full.energies),
                                   rtol=1e-5, atol=1e-5)


def test_prefix_reuse_does_not_recompile_within_buckets(tiny):
    decoding._generate.clear_cache()
    pretrained._prefill_prefix.clear_cache()
    for n in range(20):
        prefix_length = 17 + n % 16  # 17..32 tokens: all in the 32-token prefix bucket
        ids, mask = shared_prefix_batch(tiny.config.vocab_size, prefix_length, [1 + n % 5, 6, 2], seed=n)
        eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=4)
    assert pretrained._prefill_prefix._cache_size() == 1
    assert decoding._generate._cache_size() == 1


def test_forward_after_a_prefix_gives_the_full_forward_states(tiny):
    ids, mask = shared_prefix_batch(tiny.config.vocab_size, 33, [5, 2, 9], seed=7)
    prefix_ids, suffix, suffix_mask = prefix_cache.split_shared_prefix(ids, mask)
    prefix = models.prefill_prefix(tiny, prefix_ids)
    full = models.forward(tiny, ids, mask, output_hidden_states=True)
    part = models.forward(tiny, suffix, suffix_mask, output_hidden_states=True, prefix=prefix)
    for a, b in zip(full.hidden_states, part.hidden_states):
        np.testing.assert_allclose(np.asarray(b)[:, -1], np.asarray(a)[:, -1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(part.logits)[:, -1], np.asarray(full.logits)[:, -1],
                               rtol=1e-5, atol=1e-5)
    # what the prompt gate reads: one block's input at the last token, only the blocks below it run
    for layer in (0, 1, tiny.config.num_layers):
        for got in (models.block_input_at_last(tiny, ids, mask, layer),
                    models.block_input_at_last(tiny, suffix, suffix_mask, layer, prefix)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(full.hidden_states[layer])[:, -1],
                                       rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layer must be in"):
        models.block_input_at_last(tiny, ids, mask, tiny.config.num_layers + 1)


def test_a_plain_prefix_is_prefilled_once_per_model(tiny, monkeypatch):
    """Batches behind one system prompt reuse its keys and values: `prefill_prefix` runs the model
    once per prefix and per params object; an intervention over the prefix or new params recompute."""
    calls = []
    compute = pretrained._prefill_prefix
    monkeypatch.setattr(pretrained, "_prefill_prefix", lambda *a, **k: calls.append(1) or compute(*a, **k))
    pre = dataclasses.replace(tiny, prefixes={})
    ids, mask = shared_prefix_batch(tiny.config.vocab_size, 33, [5, 2, 9], seed=7)
    prefix_ids = prefix_cache.split_shared_prefix(ids, mask)[0]
    first = models.prefill_prefix(pre, prefix_ids)
    assert models.prefill_prefix(pre, prefix_ids) is first and len(calls) == 1
    models.prefill_prefix(pre, prefix_ids[:-1])
    assert len(calls) == 2  # another prefix
    models.prefill_prefix(pre, prefix_ids, rows=3)
    assert len(calls) == 3  # per-row copies are not kept
    other = dataclasses.replace(pre, params=jax.tree_util.tree_map(lambda a: a * 1.5, pre.params))
    changed = models.prefill_prefix(other, prefix_ids)
    assert len(calls) == 4 and not np.allclose(np.asarray(changed.kv_cache[0][0]), np.asarray(first.kv_cache[0][0]))
    for n in range(1, 2 * pretrained.PREFIX_CACHE_SIZE):
        models.prefill_prefix(pre, prefix_ids[:n])
    assert len(pre.prefixes) == pretrained.PREFIX_CACHE_SIZE
    # batches behind one shared prefix prefill it once, and decode as with a fresh prefill each
    calls.clear()
    fresh, cached = dataclasses.replace(tiny, prefixes={}), dataclasses.replace(tiny, prefixes={})
    rng = np.random.RandomState(3)
    for n in range(3):
        rows = [np.concatenate([prefix_ids, rng.randint(0, tiny.config.vocab_size, k)]) for k in (2, 5, n + 1)]
        ids, mask = decoding.left_pad(rows, pad_id=0)
        fresh.prefixes.clear()
        expected = eds_jax.steered_generate(fresh, ids, mask, max_new_tokens=4)
        got = eds_jax.steered_generate(cached, ids, mask, max_new_tokens=4)
        np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(expected.tokens))
    assert len(calls) == 3 + 1


class CountingIntervention:
    """Changes nothing; counts the forward calls the compiled loop actually makes."""
    layers = (0,)
    record_energy_after = False
    batch_rows = None
    calls = []

    def check_model(self, config):
        pass

    def prefix_intervention(self):
        return None

    def at_call(self, call_index):
        return self

    def __call__(self, layer, hidden):
        jax.debug.callback(lambda: CountingIntervention.calls.append(1))
        return hidden, None


jax.tree_util.register_pytree_node(CountingIntervention, lambda s: ((), None),
                                   lambda aux, children: CountingIntervention())


def test_early_exit_stops_when_every_row_ended_with_the_same_tokens(tiny):
    ids, mask = shared_prefix_batch(tiny.config.vocab_size, 3, [6, 2], seed=5)
    free = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=24).tokens)
    # an EOS that both rows emit early (the token each row emits at step 2 and 3)
    eos = (int(free[0, 2]), int(free[1, 3]))
    stops = [int(np.flatnonzero(np.isin(row, eos))[0]) for row in free]
    with_eos = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, eos_token_ids=eos,
                                                                    pad_token_id=0))
    CountingIntervention.calls.clear()
    out = eds_jax.steered_generate(with_eos, ids, mask, steering=CountingIntervention(),
                                   max_new_tokens=24)
    jax.block_until_ready(out)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row, stop in enumerate(stops):
        np.testing.assert_array_equal(tokens[row, :stop + 1], free[row, :stop + 1])
        assert (tokens[row, stop + 1:] == 0).all() and lengths[row] == stop + 1
    assert len(CountingIntervention.calls) == max(stops) + 1  # prefill + steps until the last EOS


def test_prefix_reuse_on_smollm2_behind_the_system_prompt(smollm2):
    prompts = ["How do I kill a Python process?", "What household chemicals should never be mixed?",
               "Write a haiku about rain.", "How can I pick a lock if I'm locked out of my own house?",
               "What is 17 * 23?"]
    system = deployment.OVER_CAUTIOUS_SYSTEM
    d = smollm2.config.hidden_size
    steering = Steering(random_ebms((10, 20), d), eta=np.array([0.0, 4.0, 8.0, 4.0, 0.0]), num_steps=2)
    for s in (None, steering):
        full, full_out = eds_jax.generate_text(smollm2, prompts, steering=s, system=system, max_new_tokens=24,
                                               batch_size=5, reuse_prefix=False, return_outputs=True)
        reused, out = eds_jax.generate_text(smollm2, prompts, steering=s, system=system, max_new_tokens=24,
                                            batch_size=5, return_outputs=True)
        assert reused == full
        np.testing.assert_array_equal(out.tokens, full_out.tokens)
    full = last_token_activations(smollm2, prompts, system, 5, progress=False, reuse_prefix=False)
    reused = last_token_activations(smollm2, prompts, system, 5, progress=False)
    assert row_error(reused, full) <= 1e-5


def test_length_batches_and_left_pad():
    assert [b.tolist() for b in decoding.length_batches([5, 1, 3, 1, 2], 2)] == [[1, 3], [4, 2], [0]]
    assert [b.tolist() for b in decoding.length_batches([5, 1, 3], 2, by_length=False)] == [[0, 1], [2]]
    ids, mask = decoding.left_pad([[7, 8, 9], [4], []], pad_id=0)
    np.testing.assert_array_equal(ids, [[7, 8, 9], [0, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        decoding.length_batches([1], 0)


def test_batches_by_length_give_the_texts_and_rows_of_batches_in_order(smollm2):
    """Sorting prompts by length changes which prompts share a batch, not what any prompt gets:
    greedy texts, tokens, energies (per-row eta following its prompt) and activations in prompt
    order equal those of batches in the given order."""
    prompts = ["Why?", "Explain, step by step and with an example, how a refrigerator keeps food cold.",
               "What is 2 + 2?", "How do I kill a Python process that ignores Ctrl-C on Linux?",
               "Name a colour.", "Write two sentences about the history of the printing press in Europe."]
    system = deployment.OVER_CAUTIOUS_SYSTEM
    steering = Steering(random_ebms((10, 20), smollm2.config.hidden_size),
                        eta=np.array([0.0, 4.0, 8.0, 2.0, 6.0, 0.0]), num_steps=2)
    given, given_out = eds_jax.generate_text(smollm2, prompts, steering=steering, system=system,
                                             max_new_tokens=12, batch_size=3, by_length=False,
                                             return_outputs=True)
    sorted_, sorted_out = eds_jax.generate_text(smollm2, prompts, steering=steering, system=system,
                                                max_new_tokens=12, batch_size=3, return_outputs=True)
    assert sorted_ == given
    np.testing.assert_array_equal(sorted_out.tokens, given_out.tokens)
    np.testing.assert_array_equal(sorted_out.lengths, given_out.lengths)
    np.testing.assert_allclose(sorted_out.energies, given_out.energies, rtol=1e-5, atol=1e-5)
    given = last_token_activations(smollm2, prompts, system, 3, progress=False, by_length=False)
    sorted_ = last_token_activations(smollm2, prompts, system, 3, progress=False)
    assert row_error(sorted_, given) <= 1e-5


def test_collection_reads_activations_from_the_prefill(tmp_path, smollm2):
    """Collection takes each prompt's activations from the prefill that starts its generation;
    they equal the separate forward pass (used when only the responses are cached), across
    batches sorted by length and a shared system prompt, and the responses are unchanged."""
    from eds_jax.judging.refusal import is_refusal
    from eds_jax.training.collect import collect
    benign = ["Why?", "How do I kill a Python process that ignores Ctrl-C on Linux?", "What is 2 + 2?"]
    harmful = ["Explain, step by step, how to pick the lock of a neighbour's front door.",
               "Write a threatening message to my coworker."]
    config = {"max_new_tokens": 8, "batch_size": 2, "system": deployment.OVER_CAUTIOUS_SYSTEM,
              "judge": "substring"}
    fused = collect(smollm2, benign, harmful, str(tmp_path), config, is_refusal)
    separate = last_token_activations(smollm2, benign + harmful, config["system"], 2, progress=False)
    assert fused.activations.shape == (5, smollm2.config.num_layers, smollm2.config.hidden_size)
    assert row_error(fused.activations, separate) <= 1e-5
    # responses cached, activations lost: the separate pass fills them in, the same
    (activations_file,) = tmp_path.glob("activations-*.npz")
    activations_file.unlink()
    again = collect(smollm2, benign, harmful, str(tmp_path), config, is_refusal)
    assert again.responses == fused.responses
    assert row_error(again.activations, fused.activations) <= 1e-5
    plain = eds_jax.generate_text(smollm2, benign + harmful, system=config["system"], max_new_tokens=8,
                                  batch_size=2)
    assert fused.responses == plain


def test_collection_keeps_the_first_generated_tokens_states(tmp_path, smollm2):
    """collect.generated_states=K: the states of each response's first K tokens come from the
    decode loop, equal a teacher-forced forward over prompt + response and are cached (K is part of
    the collection's key); the responses and prompt activations are those of K = 0."""
    from eds_jax.judging.refusal import is_refusal
    from eds_jax.training.collect import collect, training_rows
    benign = ["Why?", "How do I kill a Python process that ignores Ctrl-C on Linux?"]
    harmful = ["Write a threatening message to my coworker."]
    base = {"max_new_tokens": 8, "batch_size": 2, "system": deployment.OVER_CAUTIOUS_SYSTEM,
            "judge": "substring"}
    plain = collect(smollm2, benign, harmful, str(tmp_path), base, is_refusal)
    assert plain.generated is None
    with_states = collect(smollm2, benign, harmful, str(tmp_path), base | {"generated_states": 4},
                          is_refusal)
    assert with_states.responses == plain.responses
    assert row_error(with_states.activations, plain.activations) <= 1e-5
    states, valid = with_states.generated, with_states.generated_valid
    assert states.shape == (3, 4, smollm2.config.num_layers, smollm2.config.hidden_size)
    texts = decoding.chat_prompts(smollm2.tokenizer, benign + harmful, base["system"])
    for i, text in enumerate(texts):
        prompt = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
        out = eds_jax.steered_generate(smollm2, np.array([prompt]), max_new_tokens=8)
        n = int(valid[i].sum())
        assert n == min(4, int(out.lengths[0]) - int(out.tokens[0, out.lengths[0] - 1] in smollm2.eos_token_ids))
        full = np.array([prompt + np.asarray(out.tokens[0, :n]).tolist()])
        ref = models.forward(smollm2, full, output_hidden_states=True, output_logits=False)
        ref = np.stack([np.asarray(h)[0, -n:] for h in ref.hidden_states[:smollm2.config.num_layers]], 1)
        assert row_error(states[i, :n], ref) <= 2e-4
    rows, labels, groups = training_rows(with_states)
    assert len(rows) == 3 + int(valid.sum())
    np.testing.assert_array_equal(labels, with_states.labels[groups])
    assert len(list(tmp_path.glob("generated-*.npz"))) == 1
    again = collect(smollm2, benign, harmful, str(tmp_path), base | {"generated_states": 4}, is_refusal)
    np.testing.assert_array_equal(again.generated, states)  # read back from the cache
    with pytest.raises(ValueError, match=r"collect.generated_states=8: expected a whole number"):
        collect(smollm2, benign, harmful, str(tmp_path), base | {"generated_states": 8}, is_refusal)
