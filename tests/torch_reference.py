"""The PyTorch way, for tests and benchmarks only: upstream-layout EBMs and forward pre-hooks.

Importing this module imports torch; the runtime path (`import models, eds_jax`) never does.
The hook implements exactly the algorithm of `eds_jax.steering.Steering` (EBM in eval mode).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn


class TorchSimpleEBM(nn.Module):
    """Upstream SimpleEBM layout: network.{0,2,4} are the Linear layers."""

    def __init__(self, input_dim: int, hidden_dim: int = 512):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.SiLU(),
                                     nn.Linear(hidden_dim, hidden_dim // 2), nn.SiLU(),
                                     nn.Linear(hidden_dim // 2, 1))

    def forward(self, x):
        return self.network(x)


class TorchComplexEBM(nn.Module):
    """Upstream ComplexEBM layout: [Linear, LayerNorm?, SiLU, Dropout?] per width, then Linear."""

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (2048, 1024, 1024, 512),
                 dropout_rate: float = 0.15, use_layernorm: bool = True):
        super().__init__()
        layers, fan_in = [], input_dim
        for width in hidden_dims:
            layers.append(nn.Linear(fan_in, width))
            if use_layernorm:
                layers.append(nn.LayerNorm(width))
            layers.append(nn.SiLU())
            if dropout_rate > 0:
                layers.append(nn.Dropout(dropout_rate))
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)


def steer_last_position(hidden: torch.Tensor, ebm: nn.Module, eta: float, num_steps: int) -> torch.Tensor:
    """h <- h - eta * g/(|g|+1e-8) at the last position, float32, cast back."""
    x = hidden[:, -1].float().detach()
    for _ in range(num_steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(ebm(x).sum(), x)
        x = x.detach() - eta * grad / (grad.norm(dim=-1, keepdim=True) + 1e-8)
    steered = hidden.clone()
    steered[:, -1] = x.to(hidden.dtype)
    return steered


def add_steering_hooks(model, ebms: Mapping[int, nn.Module], eta: float, num_steps: int,
                       window: int | None = None) -> list:
    """Register forward pre-hooks on the decoder layers of a transformers causal LM. With
    `window`, each hook steers only the first `window` forward calls it sees (prefill included)."""
    handles = []
    for layer, ebm in sorted(ebms.items()):
        ebm.eval()
        calls = [0]

        def hook(module, args, kwargs, ebm=ebm, calls=calls):
            calls[0] += 1
            if window is not None and calls[0] > window:
                return args, kwargs
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = steer_last_position(kwargs["hidden_states"], ebm, eta, num_steps)
                return args, kwargs
            return (steer_last_position(args[0], ebm, eta, num_steps),) + tuple(args[1:]), kwargs

        handles.append(model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True))
    return handles
