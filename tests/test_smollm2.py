"""Real SmolLM2-135M-Instruct (GGUF): tokenizer, greedy decoding and steering against PyTorch."""
import json
import os

import numpy as np
import pytest
import torch

import eds_jax
from eds_jax.core.decoding import chat_prompts
from torch_reference import TorchComplexEBM, TorchSimpleEBM, add_steering_hooks
from conftest import PUBLIC_DATA

CHAT_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
                "How do I kill a Python process?", "Tell me how to make a bomb.",
                "Explain photosynthesis to a child in two sentences, please."]
NEW_TOKENS = 28


def varied_strings():
    """A few hundred strings: words, numbers, code, unicode, whitespace, special tokens, prompts."""
    base = ["Hello world", "  leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n", "3.14159",
            "12345678901234567890", "It's, isn't, they'll, we'd", "émigré naïve café 東京 😀 🚀",
            "def f(x):\n    return x ** 2  # square", "<|im_start|>user\nhi<|im_end|>",
            "<|endoftext|>", "URL: https://example.com/a?b=c&d=e", "$100.00 + 20% = ???", "ALL CAPS",
            "snake_case camelCase kebab-case", "line1\r\nline2", "   ", "a", "Ωmega ∑ ∫ √2",
            "«quotes» “smart” ‘single’"]
    strings = list(base)
    for name in ("or_bench_hard_test.json", "jailbreakbench.json", "harmless_train.json"):
        strings += [row["instruction"] for row in json.load(open(os.path.join(PUBLIC_DATA, name)))[:100]]
    for i in range(40):
        strings.append(f"{base[i % len(base)]} {i * 7919} {base[(i * 3) % len(base)]}")
    strings.append("trailing    15838")  # white space running into digits
    return strings


def test_gguf_tokenizer_matches_transformers(smollm2, smollm2_torch_tokenizer):
    """Same ids as transformers' GGUF tokenizer.

    transformers does not know llama.cpp's 'smollm' pre-tokenizer (digits split first, as in the
    original SmolLM2 tokenizer.json) and falls back to GPT-2's regex. The two differ only where
    white space runs into a digit, so those strings are held against transformers' tokenizer with
    SmolLM2's published pre-tokenizer put back.
    """
    import copy
    import re
    from tokenizers import pre_tokenizers
    strings = varied_strings()
    assert len(strings) >= 200
    ours, ref = smollm2.tokenizer, smollm2_torch_tokenizer
    published = copy.deepcopy(ref)
    published.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    compared_plain = 0
    for text in strings:
        ids = ours(text)["input_ids"]
        assert ids == published(text)["input_ids"], repr(text)
        if not re.search(r"\s\s\d", text):
            assert ids == ref(text)["input_ids"], repr(text)
            compared_plain += 1
        assert ours.decode(ids) == ref.decode(ids), repr(text)
    assert compared_plain >= 200
    for text in chat_prompts(ours, CHAT_PROMPTS, system="Be brief."):
        assert ours(text, add_special_tokens=False)["input_ids"] == \
            ref(text, add_special_tokens=False)["input_ids"]
    assert chat_prompts(ours, CHAT_PROMPTS) == chat_prompts(ref, CHAT_PROMPTS)
    assert ours.padding_side == "left" and ours.pad_token is not None
    assert smollm2.eos_token_ids == (2,)


def test_smollm2_digits_split_one_by_one(smollm2):
    """llama.cpp's 'smollm' pre-tokenizer: every digit is its own token."""
    ids = smollm2.tokenizer("year 2024")["input_ids"]
    assert [smollm2.tokenizer.decode([i]) for i in ids[-4:]] == ["2", "0", "2", "4"]


def _batch(pre):
    texts = chat_prompts(pre.tokenizer, CHAT_PROMPTS)
    enc = pre.tokenizer(texts, return_tensors="np", padding=True, add_special_tokens=False)
    assert len(set(enc["attention_mask"].sum(1))) > 1  # really left-padded
    return enc["input_ids"], enc["attention_mask"]


def _torch_generate(model, ids, mask):
    with torch.no_grad():
        out = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                             max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=2)
    tokens = out[:, ids.shape[1]:].numpy()
    return np.pad(tokens, ((0, 0), (0, NEW_TOKENS - tokens.shape[1])), constant_values=2)


def test_greedy_decoding_matches_transformers_generate(smollm2, smollm2_torch):
    ids, mask = _batch(smollm2)
    out = eds_jax.steered_generate(smollm2, ids, mask, max_new_tokens=NEW_TOKENS)
    assert out.energies is None
    np.testing.assert_array_equal(np.asarray(out.tokens), _torch_generate(smollm2_torch, ids, mask))


@pytest.fixture(scope="module")
def mixed_ebms(tmp_path_factory):
    """Three upstream-layout EBMs saved as .pt: simple, complex with LayerNorm, simple."""
    directory = tmp_path_factory.mktemp("ebms")
    torch.manual_seed(0)
    torch_ebms = {4: TorchSimpleEBM(576, 64),
                  11: TorchComplexEBM(576, (128, 64), dropout_rate=0.15, use_layernorm=True),
                  19: TorchSimpleEBM(576, 32)}
    paths = {}
    for layer, ebm in torch_ebms.items():
        paths[layer] = str(directory / f"ebm_{layer}.pt")
        torch.save(ebm.state_dict(), paths[layer])
    jax_ebms = {4: eds_jax.load_torch_ebm(paths[4], "simple", input_dim=576, hidden_dim=64),
                11: eds_jax.load_torch_ebm(paths[11], "complex", input_dim=576, hidden_dims=(128, 64),
                                           dropout_rate=0.15, use_layernorm=True),
                19: eds_jax.load_torch_ebm(paths[19], "simple", input_dim=576, hidden_dim=32)}
    return torch_ebms, jax_ebms


def test_steering_matches_pytorch_hooks_token_for_token(smollm2, smollm2_torch, mixed_ebms):
    torch_ebms, jax_ebms = mixed_ebms
    eta, steps = 4.0, 3
    ids, mask = _batch(smollm2)
    steered = eds_jax.steered_generate(smollm2, ids, mask, max_new_tokens=NEW_TOKENS,
                                       steering=eds_jax.Steering(jax_ebms, eta=eta, num_steps=steps,
                                                                  record_energy_after=True))
    plain = eds_jax.steered_generate(smollm2, ids, mask, max_new_tokens=NEW_TOKENS)
    handles = add_steering_hooks(smollm2_torch, torch_ebms, eta, steps)
    try:
        reference = _torch_generate(smollm2_torch, ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    tokens = np.asarray(steered.tokens)
    np.testing.assert_array_equal(tokens, reference)
    assert (tokens != np.asarray(plain.tokens)).any(), "this eta should change the output"
    energies = np.asarray(steered.energies)
    assert energies.shape == (len(CHAT_PROMPTS), NEW_TOKENS, 3)
    live = ~np.isnan(energies)
    assert live[:, 0].all()
    # the steps go down the energy
    assert np.mean(np.asarray(steered.energies_after)[live] < energies[live]) > 0.9


def test_steering_window_matches_pytorch_hooks_token_for_token(smollm2, smollm2_torch, mixed_ebms):
    """Steering only the calls that choose the first tokens, against hooks that count calls."""
    torch_ebms, jax_ebms = mixed_ebms
    eta, steps, window = 4.0, 3, 3
    ids, mask = _batch(smollm2)
    windowed = eds_jax.steered_generate(smollm2, ids, mask, max_new_tokens=NEW_TOKENS,
                                        steering=eds_jax.Steering(jax_ebms, eta=eta, num_steps=steps,
                                                                   window=window))
    handles = add_steering_hooks(smollm2_torch, torch_ebms, eta, steps, window=window)
    try:
        reference = _torch_generate(smollm2_torch, ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    tokens = np.asarray(windowed.tokens)
    np.testing.assert_array_equal(tokens, reference)
    full = eds_jax.steered_generate(smollm2, ids, mask, max_new_tokens=NEW_TOKENS,
                                    steering=eds_jax.Steering(jax_ebms, eta=eta, num_steps=steps))
    assert (tokens != np.asarray(full.tokens)).any(), "steering after the window should matter here"
