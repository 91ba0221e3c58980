"""RandomScaleSGD: seeded factors, resumable, equal to SGD with the drawn factor."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import optimlib


def _run(optimizer, weight, steps):
    for step in range(steps):
        weight.grad = torch.full_like(weight, 1.0 + step)
        optimizer.step()


def test_each_step_is_sgd_with_lr_times_the_drawn_factor():
    weight = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = optimlib.RandomScaleSGD([weight], lr=0.5, seed=3)
    expected = torch.zeros(3, dtype=torch.float64)
    reference = torch.Generator().manual_seed(3)
    for step in range(5):
        weight.grad = torch.full_like(weight, 1.0 + step)
        optimizer.step()
        factor = torch.rand((), generator=reference, dtype=torch.float64).item()
        expected -= 0.5 * factor * (1.0 + step)
        assert optimizer.factors[-1] == factor
        torch.testing.assert_close(weight.detach(), expected)


def test_same_seed_same_factors_other_seed_other_factors():
    factors = []
    for seed in (1, 1, 2):
        weight = torch.zeros(1, requires_grad=True)
        optimizer = optimlib.RandomScaleSGD([weight], lr=0.1, seed=seed)
        _run(optimizer, weight, 4)
        factors.append(optimizer.factors)
    assert factors[0] == factors[1] != factors[2]
    assert all(0 <= u < 1 for u in factors[0])


def test_resumed_run_draws_the_same_factors():
    weight = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = optimlib.RandomScaleSGD([weight], lr=0.1, seed=5)
    _run(optimizer, weight, 3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    resumed_weight = weight.detach().clone().requires_grad_()
    resumed = optimlib.RandomScaleSGD([resumed_weight], lr=0.1, seed=999)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _run(optimizer, weight, 4)
    _run(resumed, resumed_weight, 4)
    assert resumed.factors == optimizer.factors[3:]
    torch.testing.assert_close(resumed_weight, weight, rtol=0, atol=0)


def test_foreach_equals_for_loop(device):
    results = []
    for foreach in (False, True):
        weight = torch.ones(5, dtype=torch.float64, device=device, requires_grad=True)
        _run(optimlib.RandomScaleSGD([weight], lr=0.1, seed=0, foreach=foreach), weight, 6)
        results.append(weight.detach())
    torch.testing.assert_close(*results, rtol=0, atol=0)


def test_a_foreign_checkpoint_is_refused_with_a_reason():
    weight = torch.zeros(1, requires_grad=True)
    foreign = optimlib.SGD([weight], lr=0.1).state_dict()
    with pytest.raises(KeyError, match="generator_state"):
        optimlib.RandomScaleSGD([weight], lr=0.1).load_state_dict(foreign)


@pytest.mark.parametrize(
    ("kwargs", "error"), [({"lr": -0.1}, ValueError), ({"seed": 1.5}, TypeError)]
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match="Invalid"):
        optimlib.RandomScaleSGD([torch.zeros(1, requires_grad=True)], **kwargs)


def test_a_failed_load_leaves_the_generator_as_it_was():
    saved = optimlib.RandomScaleSGD([torch.zeros(2, requires_grad=True)], seed=0).state_dict()
    two_groups = [{"params": [torch.zeros(2, requires_grad=True)]} for _ in range(2)]
    optimizer = optimlib.RandomScaleSGD(two_groups, seed=1)
    before = optimizer.generator.get_state()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optimizer.load_state_dict(saved)
    assert torch.equal(optimizer.generator.get_state(), before)
    assert optimlib.random_scale_sgd.GENERATOR_KEY in saved, "the caller's dict was changed"
    single = optimlib.RandomScaleSGD([torch.zeros(2, requires_grad=True)], seed=1)
    single.load_state_dict(saved)
    assert torch.equal(single.generator.get_state(), saved["generator_state"])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_carries_its_generator_and_draws_what_the_original_draws(how):
    weight = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = optimlib.RandomScaleSGD([weight], lr=0.1, seed=7)
    _run(optimizer, weight, 3)
    if how == "deepcopy":
        twin = copy.deepcopy(optimizer)
    else:
        twin = pickle.loads(pickle.dumps(optimizer))
    twin_weight = twin.param_groups[0]["params"][0]
    _run(optimizer, weight, 4)
    _run(twin, twin_weight, 4)
    assert twin.factors[-4:] == optimizer.factors[-4:]
    torch.testing.assert_close(twin_weight, weight, rtol=0, atol=0)
