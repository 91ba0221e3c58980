"""Complex parameters: the same numbers as torch.optim, and as the same run on real pairs.

torch.optim optimizes a complex parameter as its real and imaginary parts,
two real coordinates each (``torch.view_as_real``). So must optimlib: a run on
complex parameters equals torch.optim's run, and equals optimlib's own run on
the real views of those parameters, on every parameter and state tensor.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import optimlib
from tests.library.optimizer_cases import OPTIMIZERS, all_configs

STEPS = 20
SHAPES = ((3, 2), (4,), ())


def _clone(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in config.items()}


def _start() -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator, dtype=torch.complex128) for shape in SHAPES]


def _loss(reals: list[Tensor]) -> Tensor:
    """A smooth loss of the real coordinates (x, y) of each complex entry."""
    return sum(
        ((r[..., 0] - 1) ** 2 + 3 * r[..., 1] ** 2 + torch.sin(2 * r[..., 0] * r[..., 1])).sum()
        for r in reals
    )


def _run(cls: type, config: dict[str, Any], *, as_real_pairs: bool, foreach: bool):
    params = [p.clone().requires_grad_() for p in _start()]
    if as_real_pairs:
        params = [torch.view_as_real(p.detach()).clone().requires_grad_() for p in params]
    extra = {"foreach": foreach} if cls.__name__ != "LBFGS" else {}
    try:
        optimizer = cls(params, **_clone(config), **extra)
    except ValueError as refusal:  # torch.optim.Adam's: tensor lr with foreach=True
        pytest.skip(f"refused, as torch.optim refuses it: {refusal}")

    def closure() -> Tensor:
        optimizer.zero_grad()
        reals = params if as_real_pairs else [torch.view_as_real(p) for p in params]
        loss = _loss(reals)
        loss.backward()
        return loss

    for _ in range(STEPS if cls.__name__ != "LBFGS" else 3):
        optimizer.step(closure)
    return params, optimizer


def _as_real(value: Any) -> Any:
    return torch.view_as_real(value) if isinstance(value, Tensor) and value.is_complex() else value


def _assert_same(params_a, opt_a, params_b, opt_b, *, real_b: bool = False) -> None:
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(
            _as_real(a.detach()), _as_real(b.detach()), rtol=1e-12, atol=1e-14
        )
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index, entries in state_a.items():
        assert entries.keys() == state_b[index].keys()
        for key, value in entries.items():
            other = state_b[index][key]
            if isinstance(value, Tensor):
                torch.testing.assert_close(
                    _as_real(value),
                    _as_real(other),
                    rtol=1e-12,
                    atol=1e-14,
                    check_dtype=False,
                    msg=lambda m, k=key: f"state[{k}]: {m}",
                )
                if not real_b and value.ndim > 0:
                    assert value.dtype == other.dtype, f"state[{key}] is kept as {value.dtype}"


def _complex_configs() -> list:
    lbfgs = [
        pytest.param(optimlib.LBFGS, torch.optim.LBFGS, config, id=f"LBFGS-{index}")
        for index, config in enumerate(({}, {"line_search_fn": "strong_wolfe", "lr": 0.5}))
    ]
    return [
        pytest.param(info.ours, info.theirs, config, id=param.id)
        for param in all_configs()
        for info, config in [param.values]
        if info.supports_complex
    ] + lbfgs


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("ours", "theirs", "config"), _complex_configs())
def test_complex_parameters_match_torch_and_real_pairs(ours, theirs, config, foreach):
    if ours is optimlib.LBFGS and foreach:
        pytest.skip("L-BFGS has one implementation")
    params, optimizer = _run(ours, config, as_real_pairs=False, foreach=foreach)
    reference, reference_optimizer = _run(theirs, config, as_real_pairs=False, foreach=False)
    _assert_same(params, optimizer, reference, reference_optimizer)
    pairs, pairs_optimizer = _run(ours, config, as_real_pairs=True, foreach=foreach)
    _assert_same(params, optimizer, pairs, pairs_optimizer, real_b=True)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(
    "info", [i for i in OPTIMIZERS if not i.supports_complex], ids=lambda info: info.name
)
def test_complex_parameters_are_refused_where_torch_refuses_them(info, foreach):
    """With torch's error, at the step, before any parameter or state changes.

    torch.optim updates the groups before the one holding the complex
    parameter; optimlib checks every group first.
    """
    messages = []
    for cls in (info.ours, info.theirs):
        real, number = torch.ones(3, requires_grad=True), torch.ones(2, dtype=torch.complex64)
        number.requires_grad_()
        optimizer = cls([{"params": [real]}, {"params": [number]}], **_clone(info.configs[0]))
        if cls is info.ours:
            optimizer.param_groups[0]["foreach"] = optimizer.param_groups[1]["foreach"] = foreach
        real.grad, number.grad = torch.ones(3), torch.ones(2, dtype=torch.complex64)
        with pytest.raises(RuntimeError) as refusal:
            optimizer.step()
        messages.append(str(refusal.value))
        if cls is info.ours:
            assert torch.equal(real.detach(), torch.ones(3))
            assert torch.equal(number.detach(), torch.ones(2, dtype=torch.complex64))
            assert not optimizer.state
    assert messages[0] == messages[1]


def test_a_sparse_gradient_of_a_complex_parameter_is_refused_before_anything_changes():
    """torch.optim.Adagrad squares such a gradient's complex values, unlike its dense update."""
    weight = torch.randn(4, 2, dtype=torch.complex128, requires_grad=True)
    optimizer = optimlib.Adagrad([weight], lr=0.1)
    weight.grad = torch.ones_like(weight).to_sparse()
    before = weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse gradients of complex parameters"):
        optimizer.step()
    assert torch.equal(weight.detach(), before)
    assert all(torch.equal(s["sum"], torch.zeros_like(s["sum"])) for s in optimizer.state.values())
