"""InfoNCE over energies: each positive against all negatives of the batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def infonce_loss(energy_pos, energy_neg, temperature: float = 0.1):
    """mean_i -log softmax([-E(p_i), -E(n_1..N)] / T)[0]; energies are [P] and [N] (N >= 1)."""
    energy_pos = jnp.asarray(energy_pos, jnp.float32)
    energy_neg = jnp.asarray(energy_neg, jnp.float32)
    if energy_pos.ndim != 1 or energy_neg.ndim != 1 or energy_neg.shape[0] == 0 \
            or energy_pos.shape[0] == 0:
        raise ValueError(f"infonce_loss needs [P] positives and [N>=1] negatives, got shapes "
                         f"{energy_pos.shape} and {energy_neg.shape}")
    pos_logit = -energy_pos / temperature  # [P]
    neg_logits = -energy_neg / temperature  # [N]
    neg_lse = jax.nn.logsumexp(neg_logits)
    return jnp.mean(jnp.logaddexp(pos_logit, neg_lse) - pos_logit)
