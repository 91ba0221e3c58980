"""Lion against a direct float64 transcription of the paper's algorithm."""

from __future__ import annotations

import pytest
import torch

import optimlib


def paper_lion(initial, gradients, *, lr, beta1, beta2, weight_decay, maximize=False):
    """Algorithm 2 of Chen et al. (2023), written out with plain tensor arithmetic."""
    theta = [t.clone() for t in initial]
    momentum = [torch.zeros_like(t) for t in initial]
    for step_gradients in gradients:
        for i, g in enumerate(step_gradients):
            g = -g if maximize else g
            c = beta1 * momentum[i] + (1 - beta1) * g
            theta[i] = theta[i] - lr * (torch.sign(c) + weight_decay * theta[i])
            momentum[i] = beta2 * momentum[i] + (1 - beta2) * g
    return theta, momentum


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"lr": 1e-3},
        {"lr": 1e-2, "betas": (0.95, 0.98), "weight_decay": 0.1},
        {"lr": 1e-2, "weight_decay": 0.5, "maximize": True},
    ],
    ids=str,
)
def test_matches_the_papers_algorithm(options, foreach, device):
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (6,), ()]
    initial = [torch.randn(s, generator=generator, dtype=torch.float64).to(device) for s in shapes]
    gradients = [
        [torch.randn(s, generator=generator, dtype=torch.float64).to(device) for s in shapes]
        for _ in range(40)
    ]
    params = [t.clone().requires_grad_() for t in initial]
    optimizer = optimlib.Lion(params, foreach=foreach, **options)
    for step_gradients in gradients:
        for p, g in zip(params, step_gradients, strict=True):
            p.grad = g.clone()
        optimizer.step()
    beta1, beta2 = options.get("betas", (0.9, 0.99))
    theta, momentum = paper_lion(
        initial,
        gradients,
        lr=options["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=options.get("weight_decay", 0.0),
        maximize=options.get("maximize", False),
    )
    for p, expected, buffer in zip(params, theta, momentum, strict=True):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(optimizer.state[p]["exp_avg"], buffer, rtol=1e-12, atol=1e-12)


def test_every_coordinate_moves_by_exactly_lr():
    weight = torch.tensor([3.0, -1e-6, 1e6], dtype=torch.float64, requires_grad=True)
    optimizer = optimlib.Lion([weight], lr=0.01)
    weight.grad = torch.tensor([1e-8, -5.0, 1e8], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(
        weight.detach(), torch.tensor([2.99, -1e-6 + 0.01, 1e6 - 0.01], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"lr": -1.0}, r"Invalid lr"),
        ({"betas": (1.0, 0.99)}, r"beta parameter at index 0"),
        ({"weight_decay": -0.1}, r"Invalid weight_decay"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        optimlib.Lion([torch.zeros(2, requires_grad=True)], **kwargs)
