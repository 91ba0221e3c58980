"""``fused=True`` for Adam, AdamW, SGD and Adagrad (optimlib/_fused.py).

A fused step runs torch's fused kernel; optimlib's for-loop stays the
reference. Each run here is held to two oracles: optimlib's for-loop, within
a tolerance (the kernel orders and contracts the arithmetic its own way), and
``torch.optim``'s own ``fused=True``, exactly (the same kernel on the same
numbers). Every test runs on each device present (CUDA when there is one).

Tolerances, against the for-loop: the kernel computes the same expressions
per element but in another order (``lr / (1 - beta1**t)`` folded into one
factor, ``sqrt(v) / sqrt(1 - beta2**t)`` as one division, a multiply-add
contracted into an FMA on some hardware), which moves each operation's result
by at most one rounding, about 2**-53 in float64 and 2**-24 in float32. Over
the 25 steps of these runs a handful of such roundings per step add up to
well under 1e-12 relative in float64 (measured: below 1e-15) and under 1e-5
in float32 (measured: below 1e-6); Adam's update divides by the square root
of a small second moment, which can double a difference, hence the margin.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch
from torch import Tensor

from optimlib.adam import Adam
from optimlib.optimizer import Optimizer
from optimlib.random_scale_sgd import RandomScaleSGD
from optimlib.sgd import SGD
from tests.library.optimizer_cases import (
    ADAGRAD_INFO,
    ADAM_INFO,
    ADAMW_INFO,
    SGD_INFO,
    OptimizerInfo,
    describe,
)

FUSED = (ADAM_INFO, ADAMW_INFO, SGD_INFO, ADAGRAD_INFO)
TOLERANCES = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-14},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}
EXACT = {"rtol": 0.0, "atol": 0.0}
STEPS = 25

CASES = [
    pytest.param(info, config, id=f"{info.name}-{describe(config)}")
    for info in FUSED
    for config in info.configs
]


def _float64_lr(config: dict[str, Any]) -> dict[str, Any]:
    """A tensor lr in float64: the for-loop then computes with it as the kernel does.

    A float32 tensor lr makes torch's (and optimlib's) for-loop round
    ``lr / (1 - beta1**t)`` to float32, which the kernels, computing in double,
    do not; that difference is the lr's, not the fused step's.
    """
    lr = config.get("lr")
    if isinstance(lr, Tensor):
        return {**config, "lr": lr.to(torch.float64)}
    return config


class Run:
    """Parameters in two groups, one with a 0-d and a non-contiguous tensor, and gradients
    that skip a parameter every third step (``grad = None``)."""

    SHAPES = ((5, 3), (7,), (), (2, 3, 4))

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        tensors = [torch.randn(s, generator=generator, dtype=dtype) for s in self.SHAPES]
        tensors.append(torch.randn(6, 4, generator=generator, dtype=dtype).t())
        self.params = [t.to(device).requires_grad_() for t in tensors]
        assert not self.params[-1].is_contiguous()

    def groups(self, info: OptimizerInfo) -> list[dict[str, Any]]:
        return [{"params": self.params[:3]}, {"params": self.params[3:], **info.group_overrides}]

    def gradients(self, step: int) -> None:
        for index, p in enumerate(self.params):
            p.grad = torch.sin(p.detach() + step + index) + 0.1 * p.detach()
        if step % 3 == 1:
            self.params[1].grad = None

    def run(self, optimizer: torch.optim.Optimizer, steps: range, scheduler: Any = None) -> None:
        for step in steps:
            self.gradients(step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


def _build(info: OptimizerInfo, config: dict[str, Any], device, dtype, *, torch_twin=False, **kw):
    run = Run(device, dtype)
    cls = info.theirs if torch_twin else info.ours
    return run, cls(run.groups(info), **{**copy.deepcopy(config), **kw})


def _assert_states_close(ours, theirs, **tolerance) -> None:
    ours_state, theirs_state = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert ours_state.keys() == theirs_state.keys()
    for index, entries in ours_state.items():
        assert entries.keys() == theirs_state[index].keys()
        for key, value in entries.items():
            other = theirs_state[index][key]
            assert (value.dtype, value.device) == (other.dtype, other.device), key
            torch.testing.assert_close(value, other, **tolerance)


def _assert_params_close(ours: list[Tensor], theirs: list[Tensor], **tolerance) -> None:
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), **tolerance)


# ------------------------------------------------------------ the same numbers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("info", "config"), CASES)
def test_fused_equals_the_for_loop_and_torchs_fused(info, config, dtype, device):
    config = _float64_lr(config)
    fused_run, fused = _build(info, config, device, dtype, fused=True)
    loop_run, loop = _build(info, config, device, dtype, foreach=False)
    torch_run, theirs = _build(info, config, device, dtype, torch_twin=True, fused=True)
    for run, optimizer in ((fused_run, fused), (loop_run, loop), (torch_run, theirs)):
        run.run(optimizer, range(STEPS))
    _assert_params_close(fused_run.params, torch_run.params, **EXACT)
    _assert_states_close(fused, theirs, **EXACT)
    _assert_params_close(fused_run.params, loop_run.params, **TOLERANCES[dtype])
    # Same keys as the for-loop's; the step counter is float32 on the device, as torch's.
    for ours_state, loop_state in zip(fused.state.values(), loop.state.values(), strict=True):
        assert ours_state.keys() == loop_state.keys()
        for key, value in ours_state.items():
            expected = loop_state[key].to(value.device, value.dtype)
            torch.testing.assert_close(value, expected, **TOLERANCES[dtype])
            if key == "step":
                assert (value.device, value.dtype) == (fused_run.params[0].device, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
def test_low_precision_parameters_match_torchs_fused_exactly(info, dtype, device):
    config = info.configs[-1]
    ours_run, ours = _build(info, config, device, dtype, fused=True)
    torch_run, theirs = _build(info, config, device, dtype, torch_twin=True, fused=True)
    ours_run.run(ours, range(10))
    torch_run.run(theirs, range(10))
    _assert_params_close(ours_run.params, torch_run.params, **EXACT)
    _assert_states_close(ours, theirs, **EXACT)


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
@pytest.mark.parametrize(("info", "config"), CASES)
def test_state_dicts_load_both_ways_with_torchs_fused(info, config, direction, device):
    first, second = (info.ours, info.theirs)
    if direction == "torch_to_ours":
        first, second = second, first
    run = Run(device, torch.float32)
    saver = first(run.groups(info), **copy.deepcopy(config), fused=True)
    run.run(saver, range(5))
    buffer = io.BytesIO()
    torch.save(saver.state_dict(), buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed_params = [p.detach().clone().requires_grad_() for p in run.params]
    resumed_run = Run(device, torch.float32)
    resumed_run.params = resumed_params
    resumed = second(resumed_run.groups(info), **copy.deepcopy(config), fused=True)
    resumed.load_state_dict(checkpoint)
    run.run(saver, range(5, 12))
    resumed_run.run(resumed, range(5, 12))
    _assert_params_close(run.params, resumed_params, **EXACT)
    _assert_states_close(saver, resumed, **EXACT)


@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
def test_a_for_loop_checkpoint_resumes_fused_as_torchs_does(info, device):
    """The step counters move to the device in float32, as torch.optim moves them."""
    config = info.configs[2]
    results = []
    for cls in (info.ours, info.theirs):
        run = Run(device, torch.float64)
        loop = cls(run.groups(info), **copy.deepcopy(config))
        run.run(loop, range(4))
        fused = cls(run.groups(info), **copy.deepcopy(config), fused=True)
        fused.load_state_dict(loop.state_dict())
        run.run(fused, range(4, 10))
        results.append((run, fused))
    (ours_run, ours), (torch_run, theirs) = results
    _assert_params_close(ours_run.params, torch_run.params, **EXACT)
    _assert_states_close(ours, theirs, **EXACT)


def test_fused_switched_on_mid_run_moves_the_counters_and_continues_the_for_loop(device):
    fused_run, switched = _build(ADAM_INFO, {"lr": 0.01}, device, torch.float64)
    loop_run, loop = _build(ADAM_INFO, {"lr": 0.01}, device, torch.float64)
    fused_run.run(switched, range(3))
    loop_run.run(loop, range(3))
    for group in switched.param_groups:
        group["fused"] = True
    fused_run.run(switched, range(3, 12))
    loop_run.run(loop, range(3, 12))
    _assert_params_close(fused_run.params, loop_run.params, **TOLERANCES[torch.float64])
    step = switched.state[fused_run.params[0]]["step"]
    assert (step.item(), step.dtype, step.device) == (
        12.0,
        torch.float32,
        fused_run.params[0].device,
    )


def test_fused_switched_off_mid_run_moves_the_counters_back_to_the_cpu(device, float64_default):
    switched_run, switched = _build(ADAM_INFO, {"lr": 0.01, "fused": True}, device, torch.float64)
    loop_run, loop = _build(ADAM_INFO, {"lr": 0.01}, device, torch.float64)
    switched_run.run(switched, range(3))
    loop_run.run(loop, range(3))
    for group in switched.param_groups:
        group["fused"] = False
    switched_run.run(switched, range(3, 12))
    loop_run.run(loop, range(3, 12))
    _assert_params_close(switched_run.params, loop_run.params, **TOLERANCES[torch.float64])
    step = switched.state[switched_run.params[0]]["step"]
    expected = loop.state[loop_run.params[0]]["step"]
    assert (step.item(), step.dtype, step.device) == (12.0, expected.dtype, expected.device)


# ------------------------------------------------------------------ GradScaler


def _scaled_gradients(run: Run, step: int, scale: Tensor, overflow: bool) -> list[Tensor]:
    run.gradients(step)
    unscaled = [p.grad.clone() if p.grad is not None else None for p in run.params]
    for p in run.params:
        if p.grad is not None:
            p.grad.mul_(scale)
    if overflow:
        run.params[0].grad.view(-1)[0] = float("inf")
    return unscaled


def scaler_step_and_check(
    run: Run, optimizer, scaler: torch.amp.GradScaler, step: int, overflow: bool
) -> None:
    """One GradScaler step: with an overflow nothing may change (parameters, state,
    counters); otherwise the gradients must end unscaled, in place."""
    scale = scaler.scale(torch.ones((), device=run.params[0].device))  # the current scale
    unscaled = _scaled_gradients(run, step, scale, overflow)
    before = [p.detach().clone() for p in run.params]
    state_before = copy.deepcopy(optimizer.state_dict()["state"])
    scaler.step(optimizer)
    scaler.update()
    if overflow:
        _assert_params_close(run.params, before, **EXACT)
        after = optimizer.state_dict()["state"]
        assert after.keys() == state_before.keys()
        for index, entries in state_before.items():
            for key, value in entries.items():
                torch.testing.assert_close(after[index][key], value, **EXACT)
        return
    for p, grad in zip(run.params, unscaled, strict=True):
        if grad is not None:  # unscaled in place (the scale is a power of 2)
            torch.testing.assert_close(p.grad, grad, **EXACT)


@pytest.mark.parametrize(("info", "config"), CASES)
def test_grad_scaler_unscales_inside_the_step_and_skips_an_overflow(info, config, device):
    """torch's contract: no step (parameters, state and counters unchanged) when an inf is
    found; otherwise the gradients are unscaled in place and the step is the for-loop's."""
    config = _float64_lr(config)
    scaled_run, scaled = _build(info, config, device, torch.float32, fused=True)
    torch_run, theirs = _build(info, config, device, torch.float32, torch_twin=True, fused=True)
    loop_run, loop = _build(info, config, device, torch.float32, foreach=False)
    assert scaled._step_supports_amp_scaling
    scalers = [torch.amp.GradScaler(device.type, init_scale=2.0**10) for _ in range(2)]
    for step in range(8):
        overflow = step in (2, 5)
        for run, optimizer, scaler in (
            (scaled_run, scaled, scalers[0]),
            (torch_run, theirs, scalers[1]),
        ):
            scaler_step_and_check(run, optimizer, scaler, step, overflow)
        if not overflow:
            loop_run.gradients(step)
            loop.step()
        _assert_params_close(scaled_run.params, torch_run.params, **EXACT)
        _assert_states_close(scaled, theirs, **EXACT)
    _assert_params_close(scaled_run.params, loop_run.params, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
def test_an_explicit_unscale_then_step_skips_an_overflow_as_torchs_fused(info, device):
    """After ``scaler.unscale_`` the step gets ``found_inf`` alone (no ``grad_scale``)."""
    config = info.configs[-1]
    runs = []
    for torch_twin in (False, True):
        run, optimizer = _build(
            info, config, device, torch.float32, torch_twin=torch_twin, fused=True
        )
        scaler = torch.amp.GradScaler(device.type, init_scale=2.0**6)
        for step in range(6):
            scale = scaler.scale(torch.ones((), device=device))
            _scaled_gradients(run, step, scale, overflow=step == 3)
            scaler.unscale_(optimizer)
            before = [p.detach().clone() for p in run.params]
            scaler.step(optimizer)
            scaler.update()
            if step == 3:
                _assert_params_close(run.params, before, **EXACT)
        runs.append((run, optimizer))
    (ours_run, ours), (torch_run, theirs) = runs
    _assert_params_close(ours_run.params, torch_run.params, **EXACT)
    _assert_states_close(ours, theirs, **EXACT)


# ------------------------------------------------------------------ learning rates


@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
def test_a_scheduled_lr_and_an_lr_tensor_changed_in_place_follow_the_for_loop(info, device):
    """Nothing is compiled: the kernels take the lr of each step as an argument."""
    from torch._dynamo.utils import counters

    compiled_before = sum(counters["stats"].values())
    for lr in (0.05, torch.tensor(0.05, dtype=torch.float64)):
        runs = []
        for fused in (True, False):
            run, optimizer = _build(info, {"lr": lr}, device, torch.float64, fused=fused)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
            for step in range(10):
                run.run(optimizer, range(step, step + 1), scheduler)
                for group in optimizer.param_groups:
                    if isinstance(group["lr"], Tensor):  # the second group's stays a float
                        group["lr"].mul_(1.01)  # in place, as a capturable schedule would
            runs.append((run, optimizer))
        (fused_run, fused_optimizer), (loop_run, _) = runs
        _assert_params_close(fused_run.params, loop_run.params, **TOLERANCES[torch.float64])
        assert float(fused_optimizer.param_groups[0]["lr"]) < 0.05 / 4
    assert sum(counters["stats"].values()) == compiled_before


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"foreach": True}, "`fused` and `foreach` cannot be `True` together."),
        ({"differentiable": True}, "`fused` does not support `differentiable`"),
    ],
    ids=["foreach", "differentiable"],
)
def test_construction_errors_are_torchs(info, options, message):
    for cls in (info.ours, info.theirs):
        with pytest.raises(RuntimeError, match=message.replace("`", ".")):
            cls([torch.ones(2, requires_grad=True)], lr=0.1, fused=True, **options)


def _torch_message(info: OptimizerInfo, params: list[Tensor]) -> str:
    optimizer = info.theirs(params, lr=0.1, fused=True)
    with pytest.raises(RuntimeError) as error:
        optimizer.step()
    return str(error.value)


def _complex_parameter(device) -> Tensor:
    weight = torch.ones(3, dtype=torch.complex64, device=device, requires_grad=True)
    weight.grad = torch.ones_like(weight)
    return weight


def _meta_parameter(device) -> Tensor:
    weight = torch.ones(3, device="meta", requires_grad=True)
    weight.grad = torch.ones_like(weight)
    return weight


def _sparse_gradient(device) -> Tensor:
    weight = torch.ones(3, device=device, requires_grad=True)
    weight.grad = torch.ones(3, device=device).to_sparse()
    return weight


@pytest.mark.parametrize("info", FUSED, ids=lambda info: info.name)
@pytest.mark.parametrize("bad", [_complex_parameter, _meta_parameter, _sparse_gradient])
def test_a_step_error_is_torchs_and_leaves_every_group_unchanged(info, bad, device):
    expected = _torch_message(info, [bad(device)])
    good = torch.ones(4, dtype=torch.float32, device=device, requires_grad=True)
    good.grad = torch.full_like(good, 0.5)
    optimizer = info.ours([{"params": [good]}, {"params": [bad(device)]}], lr=0.1, fused=True)
    state_before = copy.deepcopy(optimizer.state_dict()["state"])
    with pytest.raises(RuntimeError) as error:
        optimizer.step()
    assert str(error.value) == expected
    assert torch.equal(good.detach(), torch.ones_like(good))
    state_after = optimizer.state_dict()["state"]
    assert state_after.keys() == state_before.keys()
    for index, entries in state_before.items():
        assert entries.keys() == state_after[index].keys()
        for key, value in entries.items():
            other = state_after[index][key]
            assert value.device == other.device
            if value.device.type != "meta":  # which holds no values to compare
                assert torch.equal(value, other)


def test_groups_switched_to_foreach_later_are_refused_before_anything_changes(device):
    weights = [torch.ones(3, device=device, requires_grad=True) for _ in range(2)]
    optimizer = Adam([{"params": weights[:1]}, {"params": weights[1:]}], lr=0.1, fused=True)
    for weight in weights:
        weight.grad = torch.ones_like(weight)
    optimizer.param_groups[1]["foreach"] = True
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        optimizer.step()
    assert all(torch.equal(w.detach(), torch.ones_like(w)) for w in weights)
    assert not optimizer.state


def test_a_grad_scale_for_a_group_without_fused_is_refused(device):
    weights = [torch.ones(3, device=device, requires_grad=True) for _ in range(2)]
    optimizer = SGD([{"params": weights[:1]}, {"params": weights[1:], "fused": False}], fused=True)
    for weight in weights:
        weight.grad = torch.ones_like(weight)
    scaler = torch.amp.GradScaler(device.type)
    scaler.scale(torch.ones((), device=device))
    with pytest.raises(RuntimeError, match="fused=True"):
        scaler.step(optimizer)
    assert all(torch.equal(w.detach(), torch.ones_like(w)) for w in weights)


def test_an_overflow_at_the_first_step_leaves_no_momentum_buffer(device):
    """torch.optim's fused SGD keeps an unfilled buffer then; optimlib keeps none."""
    weight = torch.ones(3, device=device, requires_grad=True)
    reference = torch.ones(3, device=device, requires_grad=True)
    optimizer = SGD([weight], lr=0.1, momentum=0.9, fused=True)
    loop = SGD([reference], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, init_scale=4.0)
    scaler.scale(torch.ones((), device=device))
    weight.grad = torch.tensor([float("inf"), 1.0, 1.0], device=device)
    scaler.step(optimizer)
    scaler.update()
    assert not optimizer.state
    for step in range(3):
        weight.grad = torch.full_like(weight, step + 1.0) * scaler.get_scale()
        reference.grad = torch.full_like(reference, step + 1.0)
        scaler.step(optimizer)
        scaler.update()
        loop.step()
    torch.testing.assert_close(weight.detach(), reference.detach(), **TOLERANCES[torch.float32])


def test_algorithms_without_a_fused_update_still_refuse_it():
    """RandomScaleSGD has no fused update (nor a fused argument): the base class refuses it."""
    optimizer = RandomScaleSGD.__new__(RandomScaleSGD)
    weight = torch.ones(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="does not implement fused=True"):
        Optimizer.__init__(optimizer, [weight], {"lr": 0.01, "fused": True})
