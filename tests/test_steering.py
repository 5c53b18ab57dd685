"""EBMs, their import and checkpoints, and the steering step, on small shapes."""
import numpy as np
import pytest
import torch
import jax
import jax.numpy as jnp

import eds_jax
import models
from eds_jax import EBM, EBMSpec, Steering
from torch_reference import TorchComplexEBM, TorchSimpleEBM, steer_last_position
from conftest import left_padded_batch

D = 64


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return models.load_pretrained(tiny_llama_dir, dtype="float32")


@pytest.mark.parametrize("architecture,kwargs,torch_ebm", [
    ("simple", dict(hidden_dim=48), lambda: TorchSimpleEBM(D, 48)),
    ("complex", dict(hidden_dims=(40, 24, 16), dropout_rate=0.15, use_layernorm=True),
     lambda: TorchComplexEBM(D, (40, 24, 16), 0.15, True)),
    ("complex", dict(hidden_dims=(40, 24), dropout_rate=0.0, use_layernorm=False),
     lambda: TorchComplexEBM(D, (40, 24), 0.0, False)),
])
def test_torch_ebm_import_matches_energies(tmp_path, architecture, kwargs, torch_ebm):
    torch.manual_seed(0)
    reference = torch_ebm().eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.1 * torch.randn_like(p))  # LayerNorm weights away from 1
    path = str(tmp_path / "ebm.pt")
    torch.save(reference.state_dict(), path)
    ebm = eds_jax.load_torch_ebm(path, architecture, input_dim=D, **kwargs)
    x = np.random.RandomState(0).randn(5, D).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.tensor(x))[:, 0].numpy()
    np.testing.assert_allclose(np.asarray(ebm.energy(x)), want, rtol=1e-5, atol=1e-6)
    assert ebm.energy(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.float32
    # one steering step, both ways
    h = np.random.RandomState(1).randn(3, 4, D).astype(np.float32)
    steered, _ = Steering({0: ebm}, eta=0.7, num_steps=2)(0, jnp.asarray(h))
    ref_steered = steer_last_position(torch.tensor(h), reference, 0.7, 2).numpy()
    np.testing.assert_allclose(np.asarray(steered), ref_steered, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(steered)[:, :-1], h[:, :-1])


def test_torch_ebm_shape_and_key_errors(tmp_path):
    path = str(tmp_path / "ebm.pt")
    torch.save(TorchSimpleEBM(D, 48).state_dict(), path)
    with pytest.raises(ValueError, match=r"network.0.weight has shape \(48, 64\), expected \(48, 32\)"):
        eds_jax.load_torch_ebm(path, "simple", input_dim=32, hidden_dim=48)
    with pytest.raises(ValueError, match=r"missing \['network.1.weight'.*unexpected \['network.2.weight'"):
        eds_jax.load_torch_ebm(path, "complex", input_dim=D, hidden_dims=(48, 24), use_layernorm=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        eds_jax.load_torch_ebm(str(tmp_path / "missing.pt"), "simple", input_dim=D)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read EBM state dict"):
        eds_jax.load_torch_ebm(str(tmp_path / "corrupt.pt"), "simple", input_dim=D)


def test_energy_gradient_matches_finite_differences():
    ebm = EBM.init(EBMSpec.complex(8, (16, 8), 0.15, True), jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (8,), jnp.float32)
    f = ebm.energy
    grad = np.asarray(jax.grad(f)(x), np.float64)
    eps = 1e-2
    numeric = np.array([(float(f(x.at[i].add(eps))) - float(f(x.at[i].add(-eps)))) / (2 * eps)
                        for i in range(8)])
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-4)


def test_zero_gradient_gives_no_nan():
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    flat = jax.tree_util.tree_map(jnp.zeros_like, ebm.params)
    h = jnp.ones((2, 3, D))
    steered, energies = Steering({1: EBM(flat, ebm.spec)}, eta=0.5, num_steps=3,
                                 record_energy_after=True)(1, h)
    assert np.isfinite(np.asarray(steered)).all() and np.isfinite(np.asarray(energies)).all()
    np.testing.assert_array_equal(np.asarray(steered), np.asarray(h))


def test_orthogonal_true_refusal_step():
    fr = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    tr = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(1))
    h = jax.random.normal(jax.random.PRNGKey(2), (2, 1, D))
    eta, lam = 0.3, 0.5
    steered, _ = Steering({0: fr}, eta=eta, num_steps=1, true_refusal_ebms={0: tr}, ortho_lambda=lam)(0, h)
    x = h[:, -1]
    unit = lambda g: g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-8)
    g_fr = unit(jax.grad(lambda v: fr.energy(v).sum())(x))
    g_tr = unit(jax.grad(lambda v: tr.energy(v).sum())(x))
    ortho = g_fr - jnp.sum(g_fr * g_tr, -1, keepdims=True) * g_tr
    want = x - eta * ortho + lam * eta * g_tr
    np.testing.assert_allclose(np.asarray(steered[:, -1]), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert np.allclose(np.sum(np.asarray(ortho * g_tr), -1), 0, atol=1e-5)


def test_dropout_at_inference_is_explicit_and_seeded():
    ebm = EBM.init(EBMSpec.complex(D, (32, 16), 0.5, True), jax.random.PRNGKey(0))
    h = jax.random.normal(jax.random.PRNGKey(3), (2, 1, D))
    det_a, _ = Steering({0: ebm}, eta=0.5)(0, h)
    det_b, _ = Steering({0: ebm}, eta=0.5)(0, h)
    np.testing.assert_array_equal(np.asarray(det_a), np.asarray(det_b))
    rand = lambda seed: np.asarray(Steering({0: ebm}, eta=0.5, dropout_at_inference=True,
                                            dropout_seed=seed)(0, h)[0])
    np.testing.assert_array_equal(rand(1), rand(1))
    assert not np.allclose(rand(1), rand(2))
    assert not np.allclose(rand(1), np.asarray(det_a))


def test_save_load_round_trip(tmp_path):
    ebms = {2: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0)),
            0: EBM.init(EBMSpec.complex(D, (32, 16), 0.15, True), jax.random.PRNGKey(1))}
    meta = {"model": "tiny", "validation": {"2": {"auc": 0.9}}, "steer": {"eta": 0.4, "num_steps": 2}}
    directory = str(tmp_path / "ebms")
    eds_jax.save_ebms(directory, ebms, meta)
    loaded, loaded_meta = eds_jax.load_ebms(directory)
    assert sorted(loaded) == [0, 2]
    assert loaded_meta["model"] == "tiny" and loaded_meta["steer"] == {"eta": 0.4, "num_steps": 2}
    x = np.random.RandomState(0).randn(3, D).astype(np.float32)
    for layer in ebms:
        assert loaded[layer].spec == ebms[layer].spec
        np.testing.assert_array_equal(np.asarray(loaded[layer].energy(x)), np.asarray(ebms[layer].energy(x)))
    with pytest.raises(FileExistsError):
        eds_jax.save_ebms(directory, ebms, meta)
    with pytest.raises(FileNotFoundError):
        eds_jax.load_ebms(str(tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a readable EBM checkpoint"):
        eds_jax.load_ebms(str(tmp_path / "junk"))


def test_steering_checks_model_and_arguments(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [5, 3])
    wrong_width = Steering({1: EBM.init(EBMSpec.simple(D + 8, 16), jax.random.PRNGKey(0))})
    with pytest.raises(ValueError, match="EBM input width 72 != model hidden size 64"):
        eds_jax.steered_generate(tiny, ids, mask, steering=wrong_width, max_new_tokens=2)
    out_of_range = Steering({3: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))})
    with pytest.raises(ValueError, match=r"layers \[3\] are out of range .* 3 layers"):
        eds_jax.steered_generate(tiny, ids, mask, steering=out_of_range, max_new_tokens=2)
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"eta for layer \d+ must be >= 0"):
        Steering({0: ebm}, eta=-0.1)
    with pytest.raises(ValueError, match="per-layer eta covers"):
        Steering({0: ebm, 1: ebm}, eta={0: 0.1})
    with pytest.raises(ValueError, match="at least one EBM"):
        Steering({})


def test_steering_in_forward_changes_only_the_last_position(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [6, 4])
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    steering = Steering({1: ebm}, eta={1: 0.8}, num_steps=2, record_energy_after=True)
    plain = models.forward(tiny, ids, mask, output_hidden_states=True)
    steered = models.forward(tiny, ids, mask, output_hidden_states=True, intervention=steering)
    for i in (0,):
        np.testing.assert_array_equal(np.asarray(plain.hidden_states[i]), np.asarray(steered.hidden_states[i]))
    before, after = np.asarray(plain.hidden_states[1]), np.asarray(steered.hidden_states[1])
    np.testing.assert_array_equal(before[:, :-1], after[:, :-1])
    moved = np.linalg.norm(after[:, -1] - before[:, -1], axis=-1)
    assert np.all(moved > 0) and np.all(moved <= 2 * 0.8 + 1e-4)
    energies = np.asarray(steered.intervention_aux[0])
    assert energies.shape == (2, 2) and np.all(energies[:, 1] < energies[:, 0])


def test_steered_generate_returns_energies_and_per_layer_eta(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [7, 5])
    ebms = {0: EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0)),
            2: EBM.init(EBMSpec.complex(D, (16, 8), 0.15, True), jax.random.PRNGKey(1))}
    out = eds_jax.steered_generate(tiny, ids, mask, steering=Steering(ebms, eta={0: 0.5, 2: 0.0}, record_energy_after=True),
                                   max_new_tokens=5)
    energies = np.asarray(out.energies)
    assert energies.shape == (2, 5, 2) and energies.dtype == np.float32
    after = np.asarray(out.energies_after)
    np.testing.assert_allclose(after[..., 1], energies[..., 1], rtol=1e-6)  # eta 0: no move
    assert np.all(after[..., 0] < energies[..., 0])


def test_energy_floor_steps_only_rows_above_it(tiny):
    ids, mask = left_padded_batch(tiny.config.vocab_size, [6, 4, 5])
    ebm = EBM.init(EBMSpec.simple(D, 16), jax.random.PRNGKey(0))
    plain = models.forward(tiny, ids, mask, output_hidden_states=True)
    energy = np.asarray(ebm.energy(plain.hidden_states[1][:, -1]))

    def moved(**kwargs):
        out = models.forward(tiny, ids, mask, output_hidden_states=True,
                             intervention=Steering({1: ebm}, eta=0.8, num_steps=1, **kwargs))
        return np.linalg.norm(np.asarray(out.hidden_states[1])[:, -1]
                              - np.asarray(plain.hidden_states[1])[:, -1], axis=-1)

    assert np.all(moved() > 0.1)
    np.testing.assert_allclose(moved(energy_floor=energy.min() - 1.0), moved(), rtol=1e-6)
    assert np.all(moved(energy_floor=energy.max() + 1.0) == 0)  # every row already below
    # per row: the floor sits just above row 1's energy and below the others'
    floors = np.where(np.arange(3) == 1, energy + 1e-3, energy - 1e-3)
    steps = moved(energy_floor=floors)
    assert steps[1] == 0 and np.all(steps[[0, 2]] > 0.1)
    with pytest.raises(ValueError, match="energy_floor covers layers"):
        Steering({1: ebm}, energy_floor={2: 0.0})
    with pytest.raises(ValueError, match="energy_floor for layer 1 must be finite"):
        Steering({1: ebm}, energy_floor=float("nan"))
