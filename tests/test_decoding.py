"""The decode loop on a tiny random Llama: buckets, EOS, sampling, bad input."""
import dataclasses

import numpy as np
import pytest

import eds_jax
import models
from eds_jax.core import decoding
from conftest import left_padded_batch


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return models.load_pretrained(tiny_llama_dir, dtype="float32")


def greedy_reference(pre, ids, mask, n):
    """Greedy decoding by repeated full forward passes (no cache)."""
    ids, mask = np.asarray(ids), np.asarray(mask)
    out = []
    for _ in range(n):
        logits = np.asarray(models.forward(pre, ids, mask).logits[:, -1])
        token = logits.argmax(-1).astype(np.int32)
        out.append(token)
        ids = np.concatenate([ids, token[:, None]], 1)
        mask = np.concatenate([mask, np.ones_like(mask[:, :1])], 1)
    return np.stack(out, 1)


def test_decode_loop_equals_full_forward_greedy(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [11, 4, 8], seed=2)
    out = eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=10)
    np.testing.assert_array_equal(np.asarray(out.tokens), greedy_reference(tiny, ids, mask, 10))
    assert np.asarray(out.lengths).tolist() == [10, 10, 10]  # no EOS configured


def test_no_recompile_within_a_bucket(tiny):
    decoding._generate.clear_cache()
    for length in range(5, 25):  # 20 prompt lengths, all in the 32-token bucket
        ids, mask = left_padded_batch(tiny.config.vocab_size, [length, max(1, length - 3)], seed=length)
        eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=4)
    assert decoding._generate._cache_size() == 1
    ids, mask = left_padded_batch(tiny.config.vocab_size, [40, 2])
    eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=4)
    assert decoding._generate._cache_size() == 2  # next bucket: one more compile


def test_eos_pads_the_rest_and_sets_lengths(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [9, 6], seed=5)
    free = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=12).tokens)
    eos = int(free[0, 3])
    stop = int(np.flatnonzero(free[0] == eos)[0])
    with_eos = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, eos_token_ids=(eos,),
                                                                    pad_token_id=0))
    out = eds_jax.steered_generate(with_eos, ids, mask, max_new_tokens=12)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    np.testing.assert_array_equal(tokens[0, :stop + 1], free[0, :stop + 1])
    assert (tokens[0, stop + 1:] == 0).all()
    assert lengths[0] == stop + 1
    other = np.flatnonzero(free[1] == eos)
    assert lengths[1] == (other[0] + 1 if other.size else 12)


def test_sampling_is_seeded_and_varies_per_step(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [7, 7], seed=1)
    ids[1] = ids[0]  # identical rows still get different samples: keys differ per row and step
    run = lambda seed: np.asarray(eds_jax.steered_generate(
        tiny, ids, mask, max_new_tokens=16, temperature=1.5, seed=seed).tokens)
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert (a[0] != a[1]).any()
    assert len(set(a[0].tolist())) > 1
    # top_p tiny keeps only the argmax: equals greedy
    greedy = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=16).tokens)
    nucleus = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=16,
                                                  temperature=1.0, top_p=1e-6).tokens)
    np.testing.assert_array_equal(nucleus, greedy)


def test_bad_decode_input_raises(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [6, 3])
    with pytest.raises(ValueError, match="does not fit the KV cache of 20 tokens"):
        eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=16, max_cache_length=20)
    long_ids = np.ones((1, tiny.config.max_position_embeddings), np.int32)
    with pytest.raises(ValueError, match="does not fit the KV cache"):
        eds_jax.steered_generate(tiny, long_ids, None, max_new_tokens=1)
    with pytest.raises(ValueError, match="not left-padded"):
        eds_jax.steered_generate(tiny, ids, mask[:, ::-1], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="no chat template"):
        eds_jax.generate_text(tiny, ["hi"])


def test_generate_text_batches_and_decodes_new_tokens_only(smollm2):
    prompts = ["Say hello.", "Name a colour.", "What is 2 + 2?"]
    one_batch = eds_jax.generate_text(smollm2, prompts, max_new_tokens=12, batch_size=8)
    two_batches = eds_jax.generate_text(smollm2, prompts, max_new_tokens=12, batch_size=2)
    assert one_batch == two_batches
    assert all(isinstance(t, str) and t and "<|im_start|>" not in t and "Say hello" not in t
               for t in one_batch)


def test_generated_states_equal_a_teacher_forced_forward(tiny):
    """The states the loop hands back for the first K new tokens are the block inputs a full
    forward over prompt + those tokens computes at their positions; past EOS they are not real."""
    ids, mask = left_padded_batch(tiny.config.vocab_size, [9, 4, 7], seed=3)
    free = np.asarray(eds_jax.steered_generate(tiny, ids, mask, max_new_tokens=8).tokens)
    eos = int(free[1, 2])  # row 1 ends at its third token
    pre = dataclasses.replace(tiny, config=dataclasses.replace(tiny.config, eos_token_ids=(eos,),
                                                               pad_token_id=0))
    k = 5
    out = eds_jax.steered_generate(pre, ids, mask, max_new_tokens=8, return_generated_states=k)
    tokens, states = np.asarray(out.tokens), np.asarray(out.generated_states)
    valid = np.asarray(out.generated_valid)
    assert states.shape == (3, k, tiny.config.num_layers, tiny.config.hidden_size)
    stop = [int(np.flatnonzero(row == eos)[0]) if (row == eos).any() else 8 for row in tokens]
    np.testing.assert_array_equal(valid, np.arange(k)[None] < np.minimum(stop, k)[:, None])
    assert not valid[1, 2:].any()
    full_ids = np.concatenate([ids, tokens[:, :k]], 1)
    full_mask = np.concatenate([mask, np.ones((3, k), mask.dtype)], 1)
    ref = models.forward(pre, full_ids, full_mask, output_hidden_states=True, output_logits=False)
    ref = np.stack([np.asarray(h)[:, -k:] for h in ref.hidden_states[:tiny.config.num_layers]], 2)
    for row, position in zip(*np.nonzero(valid)):
        a, b = states[row, position], ref[row, position]
        assert np.abs(a - b).max() <= 2e-4 * np.abs(b).max(), (row, position)
    plain = eds_jax.steered_generate(pre, ids, mask, max_new_tokens=8)
    np.testing.assert_array_equal(np.asarray(plain.tokens), tokens)  # capture changes no token
    with pytest.raises(ValueError, match=r"return_generated_states=8: expected a whole number in \[0, "):
        eds_jax.steered_generate(pre, ids, mask, max_new_tokens=8, return_generated_states=8)
