"""Chapter 2's minimal optimizer behaves like torch.optim where the two overlap."""

from __future__ import annotations

import re

import pytest
import torch

from optimlib.book.teaching import (
    DataRebindingSGD,
    MinimalSGD,
    NaiveRandomLRSGD,
    OutsideCounterSGD,
)
from optimlib.testing import check_optimizer


def _tensors(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(2, 2, generator=generator, dtype=torch.float64).requires_grad_()
        for _ in range(3)
    ]


def _run(optimizer, params, steps=25, start=0):
    for step in range(start, start + steps):
        optimizer.zero_grad()
        loss = sum(((p - step / 10) ** 2).sum() + p.sin().sum() for p in params)
        loss.backward()
        if step % 5 == 2:
            params[1].grad = None
        optimizer.step()


def _groups(params):
    return [{"params": [params[0], params[2]]}, {"params": [params[1]], "lr": 0.01}]


def test_matches_torch_sgd_with_groups_and_momentum():
    ours, theirs = _tensors(), _tensors()
    minimal = MinimalSGD(_groups(ours), lr=0.1, momentum=0.9)
    reference = torch.optim.SGD(_groups(theirs), lr=0.1, momentum=0.9)
    _run(minimal, ours)
    _run(reference, theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for index, buffers in reference.state_dict()["state"].items():
        torch.testing.assert_close(
            minimal.state_dict()["state"][index]["momentum_buffer"],
            buffers["momentum_buffer"],
            rtol=0,
            atol=0,
        )


def test_param_groups_take_defaults_like_torch():
    params = _tensors()
    minimal = MinimalSGD(_groups(params), lr=0.1, momentum=0.9)
    reference = torch.optim.SGD(_groups(params), lr=0.1, momentum=0.9)
    for mine, theirs in zip(minimal.param_groups, reference.param_groups, strict=True):
        assert mine["params"] == theirs["params"]
        assert (mine["lr"], mine["momentum"]) == (theirs["lr"], theirs["momentum"])
    assert minimal.param_groups[1]["lr"] == 0.01


def test_state_dict_has_torchs_layout_and_resumes_exactly():
    params = _tensors()
    minimal = MinimalSGD(_groups(params), lr=0.1, momentum=0.9)
    reference = torch.optim.SGD(_groups(_tensors()), lr=0.1, momentum=0.9)
    _run(minimal, params, steps=10)
    saved = minimal.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2]]
    assert [g["params"] for g in saved["param_groups"]] == [
        g["params"] for g in reference.state_dict()["param_groups"]
    ]

    copies = [p.detach().clone().requires_grad_() for p in params]
    resumed = MinimalSGD(_groups(copies), lr=0.5, momentum=0.0)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[1]["lr"] == 0.01 and resumed.param_groups[0]["momentum"] == 0.9
    _run(minimal, params, steps=10, start=10)
    _run(resumed, copies, steps=10, start=10)
    for a, b in zip(params, copies, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_zero_grad_both_ways():
    params = _tensors()
    optimizer = MinimalSGD(params, lr=0.1)
    params[0].grad = torch.ones(2, 2, dtype=torch.float64)
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(params[0].grad, torch.zeros(2, 2, dtype=torch.float64))
    optimizer.zero_grad()
    assert params[0].grad is None


def test_a_parameter_in_two_groups_is_refused():
    params = _tensors()
    with pytest.raises(ValueError, match="more than one parameter group"):
        MinimalSGD([{"params": params[:2]}, {"params": params[1:]}], lr=0.1)


def test_mismatched_state_dict_is_refused():
    saved = MinimalSGD(_tensors(), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="do not match"):
        MinimalSGD(_tensors()[:2], lr=0.1).load_state_dict(saved)


def test_closure_is_evaluated_with_gradients():
    params = _tensors()
    optimizer = MinimalSGD(params, lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = optimizer.step(closure)
    assert loss.grad_fn is not None  # the closure ran with gradients enabled


@pytest.mark.parametrize(
    ("factory", "check", "detail"),
    [
        (
            lambda p: NaiveRandomLRSGD(p, lr=0.1),
            "step(closure) calls the closure",
            "never called the closure",
        ),
        (
            lambda p: DataRebindingSGD(p, lr=0.1),
            "the update is in place",
            r"storage was replaced \(as 'param\.data = \.\.\.' does\)",
        ),
        (
            lambda p: OutsideCounterSGD(p, lr=0.1),
            "a checkpoint resumes exactly",
            "did not continue like the uninterrupted one",
        ),
    ],
    ids=["naive", "rebinds param.data", "counter outside state"],
)
def test_planted_faults_are_named(factory, check, detail):
    with pytest.raises(AssertionError, match=rf"'{re.escape(check)}.*' failed: .*{detail}"):
        check_optimizer(factory)
