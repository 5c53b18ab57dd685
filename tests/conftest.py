"""Shared fixtures: tiny random transformers checkpoints and the real SmolLM2 GGUF."""
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PUBLIC_DATA = os.path.join(ROOT, "eds_jax", "datasets", "public")  # what the package ships
_OWN_JIT_CACHE = []


def pytest_configure(config):
    """One JAX persistent compilation cache for the run: many tests start `steer_decode.py`,
    `train_ebm.py` or `evaluate` in subprocesses that compile the same SmolLM2 decode loop; through
    the environment, pytest-xdist's workers and every subprocess share it. A cache the caller set is
    used as is; ours is removed at the end."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        directory = tempfile.mkdtemp(prefix="eds-jax-tests-jit-")
        _OWN_JIT_CACHE.append(directory)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
    for directory in _OWN_JIT_CACHE:
        shutil.rmtree(directory, ignore_errors=True)


def make_checkpoint(directory, family="llama", dtype="float32", seed=0, max_shard_size=None, **overrides):
    """Random-init a transformers model from a tiny config and save_pretrained it; return the model."""
    import torch
    import transformers
    torch.manual_seed(seed)
    base = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                eos_token_id=None, bos_token_id=None, pad_token_id=None)
    base.update(overrides)
    if family == "llama":
        config = transformers.LlamaConfig(**base)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen3Config(**base)
        model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # non-trivial norms and biases, so a missed parameter shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    model = model.eval()
    save = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    save.save_pretrained(directory, **kwargs)
    return model


def left_padded_batch(vocab, lengths, seed=0):
    from eds_jax.core.decoding import left_pad
    rng = np.random.RandomState(seed)
    return left_pad([rng.randint(0, vocab, n) for n in lengths], pad_id=0)


@pytest.fixture(scope="session")
def smollm2_path():
    import models
    return models.smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    import models
    return models.load_pretrained(smollm2_path, dtype="float32")


@pytest.fixture(scope="session")
def smollm2_torch(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(
        os.path.dirname(smollm2_path), gguf_file=os.path.basename(smollm2_path),
        dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smollm2_torch_tokenizer(smollm2_path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.dirname(smollm2_path),
                                         gguf_file=os.path.basename(smollm2_path))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny_llama"))
    make_checkpoint(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory, smollm2):
    """A tiny random Llama that speaks SmolLM2's tokenizer and chat template."""
    directory = str(tmp_path_factory.mktemp("tiny_chat"))
    make_checkpoint(directory, vocab_size=smollm2.config.vocab_size, eos_token_id=2, pad_token_id=2)
    smollm2.tokenizer.save_pretrained(directory)
    return directory


def kill_once_written(command, path, timeout=300):
    """Start `command` (from the project root), SIGKILL it as soon as `path` exists, and wait."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not os.path.exists(path):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def save_test_steering(directory, ebms, eta=2.0, num_steps=2, energy_floor=None, system=None,
                       judge=None, sweep=None, unsteered=False, overwrite=False):
    """EBMs saved the way train_ebm.py saves them (`eds_jax.save_steering`), with hand-set settings."""
    import eds_jax
    layers = sorted(ebms)
    settings = eds_jax.SteeringSettings(
        layers=tuple(layers), eta={l: float(eta) for l in layers}, num_steps=num_steps,
        energy_floor=energy_floor, unsteered=unsteered, chosen_on_validation=sweep is not None)
    width = next(iter(ebms.values())).spec.input_dim
    return eds_jax.save_steering(str(directory), ebms, settings, system=system,
                                 model={"source": "test", "family": "llama", "hidden_size": width,
                                        "num_layers": max(layers) + 1},
                                 judge=judge, sweep=sweep, training={}, overwrite=overwrite)


def flip_one_bit(directory):
    """Flip one bit in the middle of the largest parameter file of a saved EBM directory."""
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(directory, "params"))
             for f in names]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(path, "wb").write(bytes(data))
