"""Flax ports against transformers' PyTorch models: float32 parity, loaders, bad input."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.pretrained import apply_model, prompt_positions
from conftest import left_padded_batch, make_checkpoint

TOLERANCE = 2e-4

CASES = {
    "llama_mha": dict(family="llama", num_key_value_heads=4),
    "llama_gqa_tied": dict(family="llama", num_key_value_heads=2, tie_word_embeddings=True),
    "llama_mqa_biases": dict(family="llama", num_key_value_heads=1, attention_bias=True, mlp_bias=True),
    "llama3_rope_scaling": dict(
        family="llama", num_key_value_heads=2, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen3_tied_head_dim": dict(family="qwen3", head_dim=24, tie_word_embeddings=True, rms_norm_eps=1e-6),
    "qwen3_untied_head_dim": dict(family="qwen3", head_dim=24, tie_word_embeddings=False,
                                  rms_norm_eps=1e-6, attention_bias=True),
}


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def torch_reference(model, ids, mask):
    import torch
    pos = np.asarray(prompt_positions(mask))
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(pos, dtype=torch.long), output_hidden_states=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_transformers(case, tmp_path):
    overrides = dict(CASES[case])
    family = overrides.pop("family")
    torch_model = make_checkpoint(str(tmp_path), family=family, **overrides)
    pre = models.load_pretrained(str(tmp_path), dtype="float32")
    assert pre.family == family
    # several hundred tokens: with original_max_position_embeddings=64 most positions are scaled
    ids, mask = left_padded_batch(pre.config.vocab_size, [300, 217, 41])
    ours = models.forward(pre, ids, mask, output_hidden_states=True)
    ref = torch_reference(torch_model, ids, mask)
    real = mask.astype(bool)
    assert len(ours.hidden_states) == len(ref.hidden_states) == pre.config.num_layers + 1
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
        assert rel_err(np.asarray(a)[real], b.numpy()[real]) <= TOLERANCE, f"hidden_states[{i}]"
    assert ours.logits.dtype == jnp.float32
    assert rel_err(np.asarray(ours.logits)[real], ref.logits.numpy()[real]) <= TOLERANCE


def test_llama3_scaling_is_read_from_config(tmp_path):
    """The llama3 factor must come from the config (Llama 3.2 uses 32, 3.1 uses 8)."""
    from models.layers import rope_inverse_frequencies
    make_checkpoint(str(tmp_path), **{k: v for k, v in CASES["llama3_rope_scaling"].items() if k != "family"})
    scaling = models.load_pretrained(str(tmp_path), dtype="float32").config.rope_scaling
    assert scaling.factor == 32.0 and scaling.original_max_position_embeddings == 64
    eight = scaling.__class__(8.0, 1.0, 4.0, 64)
    assert not np.allclose(rope_inverse_frequencies(16, 5e5, scaling), rope_inverse_frequencies(16, 5e5, eight))


def test_legacy_rope_scaling_form_reads_the_same(tmp_path):
    overrides = {k: v for k, v in CASES["llama3_rope_scaling"].items() if k != "family"}
    make_checkpoint(str(tmp_path), **overrides)
    new = models.load_pretrained(str(tmp_path), dtype="float32").config
    path = os.path.join(tmp_path, "config.json")
    cfg = json.load(open(path))
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = params
    json.dump(cfg, open(path, "w"))
    assert models.load_pretrained(str(tmp_path), dtype="float32").config == new


def test_cached_decode_equals_full_forward(tmp_path):
    make_checkpoint(str(tmp_path), num_key_value_heads=2)
    pre = models.load_pretrained(str(tmp_path), dtype="float32")
    cfg = pre.config
    ids, mask = left_padded_batch(cfg.vocab_size, [12, 7])
    steps = 6
    follow = np.random.RandomState(1).randint(0, cfg.vocab_size, (2, steps)).astype(np.int32)
    full_ids = np.concatenate([ids, follow], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(follow)], axis=1)
    full = models.forward(pre, full_ids, full_mask).logits

    batch, prompt_len = ids.shape
    cache = models.init_kv_cache(cfg, batch, prompt_len + steps, jnp.float32)
    kv_mask = np.zeros((batch, prompt_len + steps), bool)
    kv_mask[:, :prompt_len] = mask
    positions = prompt_positions(mask)
    out = apply_model(cfg, pre.dtype, pre.params, ids, positions, cache, 0, kv_mask)
    assert rel_err(out.logits[:, -1], full[:, prompt_len - 1]) <= TOLERANCE
    position = positions[:, -1]
    for t in range(steps):
        kv_mask[:, prompt_len + t] = True
        position = position + 1
        out = apply_model(cfg, pre.dtype, pre.params, follow[:, t:t + 1], position[:, None],
                          out.kv_cache, prompt_len + t, kv_mask)
        assert rel_err(out.logits[:, -1], full[:, prompt_len + t]) <= TOLERANCE, f"step {t}"


def test_bfloat16_and_sharded_checkpoints_load(tmp_path):
    import torch
    single, sharded, bf16 = (str(tmp_path / n) for n in ("single", "sharded", "bf16"))
    model = make_checkpoint(single, seed=3)
    make_checkpoint(sharded, seed=3, max_shard_size="60KB")
    make_checkpoint(bf16, seed=3, dtype="bfloat16")
    assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
    a = models.load_pretrained(single, dtype="float32").params
    b = models.load_pretrained(sharded, dtype="float32").params
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)

    pre = models.load_pretrained(bf16, dtype="bfloat16")
    leaves = jax.tree_util.tree_leaves(pre.params)
    assert all(x.dtype == jnp.bfloat16 for x in leaves)
    want = model.model.embed_tokens.weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(np.asarray(pre.params["embed_tokens"]["embedding"], np.float32), want)
    ids, mask = left_padded_batch(pre.config.vocab_size, [9, 5])
    logits = models.forward(pre, ids, mask).logits
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("field,value,match", [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
     "rope_type 'yarn'"),
    ("hidden_act", "gelu", "hidden_act"),
])
def test_unsupported_llama_config_raises(tmp_path, field, value, match):
    make_checkpoint(str(tmp_path), **{field: value})
    with pytest.raises(models.UnsupportedConfigError, match=match):
        models.load_pretrained(str(tmp_path), dtype="float32")


def test_qwen3_sliding_window_raises(tmp_path):
    make_checkpoint(str(tmp_path), family="qwen3", use_sliding_window=True, sliding_window=16,
                    max_window_layers=1)
    with pytest.raises(models.UnsupportedConfigError, match="sliding-window"):
        models.load_pretrained(str(tmp_path), dtype="float32")


def test_missing_and_corrupt_checkpoints_raise(tmp_path):
    with pytest.raises(models.CheckpointError, match="does not exist"):
        models.load_pretrained(str(tmp_path / "nope.gguf"))
    with pytest.raises(models.CheckpointError, match="does not exist"):
        models.load_pretrained(str(tmp_path / "nothing_here"))
    with pytest.raises(models.CheckpointError, match="local Hugging Face cache"):
        models.load_pretrained("some-org/not-cached-model")
    directory = str(tmp_path / "ck")
    make_checkpoint(directory, max_shard_size="60KB")
    shards = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    os.remove(os.path.join(directory, shards[0]))
    with pytest.raises(models.CheckpointError, match="shards that do not exist"):
        models.load_pretrained(directory)
    corrupt = str(tmp_path / "corrupt")
    make_checkpoint(corrupt)
    weights = os.path.join(corrupt, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(models.CheckpointError, match="cannot read safetensors"):
        models.load_pretrained(corrupt)


def test_checkpoint_shape_mismatch_raises(tmp_path):
    make_checkpoint(str(tmp_path))
    path = os.path.join(tmp_path, "config.json")
    cfg = json.load(open(path))
    cfg["intermediate_size"] = 80
    json.dump(cfg, open(path, "w"))
    with pytest.raises(models.CheckpointError, match=r"mlp\.\w+_proj\.weight' has shape .*expected .*80"):
        models.load_pretrained(str(tmp_path), dtype="float32")


def test_runtime_import_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, models, eds_jax; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"


def test_hub_id_loads_from_the_local_cache(tmp_path, monkeypatch):
    """A hub id is resolved in the local HF cache only (the layout huggingface_hub writes)."""
    import shutil
    source = str(tmp_path / "src")
    make_checkpoint(source, seed=4)
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = models.load_pretrained("acme/tiny-llama", dtype="float32")
    direct = models.load_pretrained(source, dtype="float32")
    jax.tree_util.tree_map(np.testing.assert_array_equal, cached.params, direct.params)
    with pytest.raises(models.CheckpointError, match="local Hugging Face cache"):
        models.load_pretrained("acme/other-model", dtype="float32")


def test_tensor_parallel_params_give_the_same_outputs(tiny_llama_dir):
    """Parameters split on a (data=1, model=2) mesh of forced CPU devices: same logits and tokens."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"""
import sys, numpy as np, jax
sys.path.insert(0, {root!r}); sys.path.insert(0, {os.path.join(root, 'tests')!r})
import models, eds_jax
from models.sharding import param_shardings
from eds_jax.training.infonce import make_mesh
from conftest import left_padded_batch
mesh = make_mesh(1, 2)
plain = models.load_pretrained({tiny_llama_dir!r}, dtype="float32")
split = models.load_pretrained({tiny_llama_dir!r}, dtype="float32",
                               shardings=lambda c: param_shardings(c, mesh))
kernel = split.params["layers_0"]["mlp"]["up_proj"]["kernel"]
assert len(kernel.sharding.device_set) == 2 and kernel.addressable_shards[0].data.shape == (64, 48)
ids, mask = left_padded_batch(plain.config.vocab_size, [9, 5])
a, b = models.forward(plain, ids, mask).logits, models.forward(split, ids, mask).logits
np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
ga = eds_jax.steered_generate(plain, ids, mask, max_new_tokens=6).tokens
gb = eds_jax.steered_generate(split, ids, mask, max_new_tokens=6).tokens
np.testing.assert_array_equal(np.asarray(ga), np.asarray(gb))
print("OK")
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
