"""SGD-specific checks. The generic suite (test_conformance.py) covers the rest."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import optimlib


def test_update_follows_the_docstrings_equations():
    """Three steps of Nesterov SGD with weight decay, written out by hand from the maths."""
    lr, mu, wd = 0.1, 0.9, 0.01
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    optimizer = optimlib.SGD([theta], lr=lr, momentum=mu, weight_decay=wd, nesterov=True)
    expected, buffer = theta.detach().clone(), None
    for step in range(3):
        gradient = 2 * expected + step  # the gradient of |theta|^2 + step * sum(theta)
        theta.grad = gradient.clone()
        optimizer.step()
        direction = gradient + wd * expected
        buffer = direction.clone() if buffer is None else mu * buffer + direction
        expected = expected - lr * (direction + mu * buffer)
        torch.testing.assert_close(theta.detach(), expected)
    torch.testing.assert_close(optimizer.state[theta]["momentum_buffer"], buffer)


def test_plain_sgd_keeps_no_state():
    weight = torch.ones(2, requires_grad=True)
    optimizer = optimlib.SGD([weight], lr=0.1)
    weight.grad = torch.ones(2)
    optimizer.step()
    assert len(optimizer.state) == 0


def test_the_users_gradient_is_never_modified():
    # torch.optim.SGD(foreach=True, nesterov=True) adds the buffer into p.grad in
    # place; optimlib leaves the gradient as backward() wrote it.
    for foreach in (False, True):
        weight = torch.ones(3, requires_grad=True)
        optimizer = optimlib.SGD([weight], lr=0.1, momentum=0.9, nesterov=True, foreach=foreach)
        for _ in range(2):
            weight.grad = torch.full((3,), 0.5)
            optimizer.step()
            assert torch.equal(weight.grad, torch.full((3,), 0.5))


hyperparameters = st.fixed_dictionaries(
    {
        "lr": st.floats(0.0, 0.5),
        "momentum": st.floats(0.0, 0.99),
        "dampening": st.floats(0.0, 1.0),
        "weight_decay": st.floats(0.0, 0.5),
        "maximize": st.booleans(),
        "nesterov": st.booleans(),
        "foreach": st.booleans(),
    }
)
shapes = st.lists(st.lists(st.integers(1, 4), max_size=3).map(tuple), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(options=hyperparameters, shapes=shapes, seed=st.integers(0, 2**16))
def test_random_hyperparameters_and_shapes_match_torch(options, shapes, seed):
    if options["nesterov"]:
        options = {**options, "dampening": 0.0, "momentum": max(options["momentum"], 0.1)}
    generator = torch.Generator().manual_seed(seed)
    initial = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    gradients = [
        [torch.randn(s, generator=generator, dtype=torch.float64) for s in shapes] for _ in range(8)
    ]
    results = []
    for cls in (optimlib.SGD, torch.optim.SGD):
        params = [t.clone().requires_grad_() for t in initial]
        optimizer = cls(params, **options)
        for step_gradients in gradients:
            for param, gradient in zip(params, step_gradients, strict=True):
                param.grad = gradient.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_nesterov_error_names_the_arguments():
    with pytest.raises(ValueError, match=r"momentum=0 and dampening=0"):
        optimlib.SGD([torch.ones(1, requires_grad=True)], nesterov=True)
