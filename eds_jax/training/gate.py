"""Fit the prompt gate (`eds_jax.core.gate.PromptGate`) on the training collection.

The gate is an L2-regularised logistic read-out of the prompt's kind (benign = 1, harmful = 0)
from the state entering one block at the last prompt token: the activations the EBMs train on,
labelled by which prompt set each prompt came from, not by the refusal judge. For every candidate
layer, k-fold cross-fitting gives each prompt a held-out score; the layer with the best held-out
AUC is kept, refitted on every prompt, and the threshold is the `harmful_quantile` of the harmful
prompts' held-out scores, so about 1 - harmful_quantile of unseen harmful prompts like the
training ones would open.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eds_jax.core.gate import PromptGate


def auc(positive, negative) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if positive.size == 0 or negative.size == 0:
        raise ValueError("AUC needs at least one score of each class")
    ranks = rankdata(np.concatenate([positive, negative]))
    rank_sum = ranks[:positive.size].sum()
    return float((rank_sum - positive.size * (positive.size + 1) / 2) / (positive.size * negative.size))


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(x, y, weight, l2, learning_rate, steps: int):
    """Logistic regression on standardised x [N, D] with per-row weights (0 leaves a row out)."""
    optimizer = optax.adam(learning_rate)
    total = jnp.maximum(weight.sum(), 1.0)

    def loss(params):
        w, b = params
        per_row = optax.sigmoid_binary_cross_entropy(x @ w + b, y)
        return jnp.sum(per_row * weight) / total + l2 * jnp.sum(w * w)

    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    params = (jnp.zeros(x.shape[1], jnp.float32), jnp.float32(0.0))
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params


def _standardiser(x, rows):
    mean = x[rows].mean(axis=0)
    scale = x[rows].std(axis=0) + 1e-6
    return mean, scale


def _fit_folded(x, y, rows, l2, learning_rate, steps):
    """(weight [D], bias) in the raw state's units, fitted on `rows` of x."""
    mean, scale = _standardiser(x, rows)
    weight = np.zeros(len(x), np.float32)
    weight[rows] = 1.0
    w, b = _fit(jnp.asarray((x - mean) / scale), jnp.asarray(y), jnp.asarray(weight),
                jnp.float32(l2), jnp.float32(learning_rate), steps)
    w = np.asarray(w, np.float64) / scale
    return w.astype(np.float32), float(b) - float(mean @ w)


def fit_prompt_gate(activations, kinds: Sequence[str], harmful_quantile: float = 0.99,
                    layers: Optional[Sequence[int]] = None, folds: int = 5, l2: float = 1e-2,
                    steps: int = 300, learning_rate: float = 1e-2, seed: int = 0) -> PromptGate:
    """A `PromptGate` from [N, L, D] last-prompt-token activations and each prompt's kind.

    layers: the candidate blocks (default: every block but the first, whose input at the last
    prompt token is the same template token for every prompt).
    """
    activations = np.asarray(activations)
    kinds = np.asarray(kinds)
    if activations.ndim != 3 or activations.shape[0] != kinds.shape[0]:
        raise ValueError(f"activations must be [N, L, D] with one kind per prompt; got "
                         f"{activations.shape} and {kinds.shape[0]} kinds")
    unknown = sorted(set(kinds.tolist()) - {"benign", "harmful"})
    if unknown:
        raise ValueError(f"prompt kinds {unknown}: expected 'benign' or 'harmful'")
    y = (kinds == "benign").astype(np.float32)
    counts = {"benign": int(y.sum()), "harmful": int((1 - y).sum())}
    if min(counts.values()) < folds:
        raise ValueError(f"the prompt gate needs at least {folds} prompts of each kind (one per fold), "
                         f"got {counts}")
    if not 0.5 <= harmful_quantile <= 1.0:
        raise ValueError(f"harmful_quantile must be in [0.5, 1], got {harmful_quantile}")
    if int(folds) < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    num_layers = activations.shape[1]
    candidates = list(range(1, num_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in candidates if not 0 <= l < num_layers]
    if not candidates or bad:
        raise ValueError(f"gate layers {list(layers) if layers is not None else candidates} must be in "
                         f"[0, {num_layers})")
    # stratified folds: every fold holds both kinds
    fold = np.empty(len(y), int)
    rng = np.random.RandomState(seed)
    for value in (0.0, 1.0):
        members = rng.permutation(np.flatnonzero(y == value))
        fold[members] = np.arange(members.size) % folds
    held_out_auc, held_out_scores = {}, {}
    for layer in candidates:
        x = activations[:, layer].astype(np.float32)
        scores = np.empty(len(y))
        for k in range(folds):
            w, b = _fit_folded(x, y, fold != k, l2, learning_rate, steps)
            scores[fold == k] = x[fold == k] @ w + b
        held_out_scores[layer] = scores
        held_out_auc[layer] = auc(scores[y == 1], scores[y == 0])
    best = max(candidates, key=lambda l: (held_out_auc[l], -l))  # ties: the shallower layer
    scores = held_out_scores[best]
    threshold = float(np.quantile(scores[y == 0], harmful_quantile))
    weight, bias = _fit_folded(activations[:, best].astype(np.float32), y, np.arange(len(y)), l2,
                               learning_rate, steps)
    info = {"harmful_quantile": float(harmful_quantile), "folds": int(folds), "l2": float(l2),
            "held_out_auc": round(held_out_auc[best], 4),
            "held_out_auc_by_layer": {str(l): round(v, 4) for l, v in held_out_auc.items()},
            "held_out_open": {"benign": round(float(np.mean(scores[y == 1] > threshold)), 4),
                              "harmful": round(float(np.mean(scores[y == 0] > threshold)), 4)},
            "prompts": counts}
    return PromptGate(best, weight, bias, threshold, info)
