"""InfoNCE against the per-positive PyTorch formulation."""
import jax
import numpy as np
import pytest
import torch

import eds_jax


def torch_per_positive_loss(energy_pos, energy_neg, temperature):
    losses = []
    for e_pos in energy_pos:
        logits = torch.cat([-e_pos[None], -energy_neg]) / temperature
        losses.append(torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("num_pos,num_neg,temperature", [(64, 64, 0.1), (7, 3, 0.1), (5, 1, 0.5)])
def test_infonce_matches_per_positive_loop(num_pos, num_neg, temperature):
    rng = np.random.RandomState(num_pos)
    pos, neg = rng.randn(num_pos).astype(np.float32), rng.randn(num_neg).astype(np.float32)
    loss, (g_pos, g_neg) = jax.value_and_grad(eds_jax.infonce_loss, argnums=(0, 1))(pos, neg, temperature)
    t_pos = torch.tensor(pos, requires_grad=True)
    t_neg = torch.tensor(neg, requires_grad=True)
    ref = torch_per_positive_loss(t_pos, t_neg, temperature)
    ref.backward()
    np.testing.assert_allclose(float(loss), ref.item(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_pos), t_pos.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_neg), t_neg.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_infonce_refuses_empty_sides():
    with pytest.raises(ValueError, match="negatives"):
        eds_jax.infonce_loss(np.ones(3), np.ones(0))
    with pytest.raises(ValueError, match="positives"):
        eds_jax.infonce_loss(np.ones(0), np.ones(3))
