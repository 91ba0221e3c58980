"""``fused=True`` for the algorithms without a torch kernel: the compiled for-loop.

``optimlib._compiled`` hands each algorithm's for-loop to ``torch.compile``;
the eager for-loop is the oracle. Each algorithm runs one configuration that
takes its option branches, in float32 and float64, with a learning rate that
a scheduler changes every second step, a second parameter group with its own
options, a 0-d and a non-contiguous parameter (which take the eager for-loop)
and a gradient missing every third step.

Tolerances, against the for-loop: the generated code computes the same
expressions per element, but a tensor scale multiplies where the for-loop
passes ``alpha=``, vectorised loops may contract a multiply-add into an FMA,
and Adafactor's norms are summed in another order. Each moves a result by
about one rounding (2**-53 in float64, 2**-24 in float32). Over these 12 steps
the measured differences stay below 1e-13 relative in float64 and 1e-6 in
float32; the tolerances below leave a margin for algorithms that divide by a
small running average (RMSprop, Adadelta), which can amplify a difference.
"""

from __future__ import annotations

import copy
import inspect
import io
from typing import Any

import pytest
import torch
from torch import Tensor
from torch._dynamo.utils import counters

import optimlib
from optimlib._compiled import chunk_sizes
from tests.library.test_fused import EXACT, Run, _assert_params_close, scaler_step_and_check

TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 2e-5, "atol": 2e-6},
}
#: NAdam keeps its running product of momenta in float32 (as torch.optim does); the
#: compiled code multiplies it by mu_t in one rounding where eager rounds mu_t to
#: float32 first, a float32-sized difference that reaches float64 parameters.
FLOAT32_STATE = {optimlib.NAdam: {"rtol": 1e-8, "atol": 1e-10}}
STEPS = 12

#: One configuration per algorithm, taking its option branches.
CASES: dict[type, dict[str, Any]] = {
    optimlib.RMSprop: {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
    optimlib.Adadelta: {"lr": 0.5, "weight_decay": 0.1, "maximize": True},
    optimlib.Adamax: {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
    optimlib.NAdam: {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    optimlib.RAdam: {"lr": 0.01, "betas": (0.9, 0.9)},  # rectified from the sixth step on
    optimlib.ASGD: {"lr": 0.02, "lambd": 0.01, "alpha": 0.5, "t0": 5},
    optimlib.Rprop: {"lr": 0.05, "etas": (0.3, 1.5)},
    optimlib.Adafactor: {"lr": 0.5, "weight_decay": 0.1},  # 1/sqrt(t) takes over at t = 5
    optimlib.Lion: {"lr": 0.01, "weight_decay": 0.1},
    optimlib.ScheduleFreeAdamW: {"lr": 0.01, "warmup_steps": 3, "weight_decay": 0.01},
}
#: What the second parameter group sets for itself: another lr and another number
#: that the compiled code holds as a constant (a second graph, guarded by it).
OVERRIDES: dict[type, dict[str, Any]] = {
    optimlib.RMSprop: {"alpha": 0.95},
    optimlib.Adadelta: {"rho": 0.8},
    optimlib.Adamax: {"betas": (0.85, 0.995)},
    optimlib.NAdam: {"momentum_decay": 0.008},
    optimlib.RAdam: {"betas": (0.8, 0.95)},
    optimlib.ASGD: {"t0": 3},
    optimlib.Rprop: {"etas": (0.4, 1.1)},
    optimlib.Adafactor: {"beta2_decay": -0.6, "d": 1.5},
    optimlib.Lion: {"betas": (0.95, 0.98)},
    optimlib.ScheduleFreeAdamW: {"betas": (0.95, 0.99)},
}
#: torch.optim's twin, for the checkpoint tests (Lion and schedule-free AdamW have none).
TWINS = {cls: getattr(torch.optim, cls.__name__, None) for cls in CASES}
IDS = [cls.__name__ for cls in CASES]


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _build(cls: type, device, dtype, **options):
    run = Run(device, dtype)
    second = {"lr": CASES[cls]["lr"] / 2, **OVERRIDES[cls]}
    groups = [{"params": run.params[:3]}, {"params": run.params[3:], **second}]
    return run, cls(groups, **{**copy.deepcopy(CASES[cls]), **options})


def _steps(run: Run, optimizer, steps: range, scheduler=None) -> None:
    for step in steps:
        run.gradients(step)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def _scheduler(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)


def _state_items(optimizer) -> list[tuple[Any, str, Any]]:
    return [
        (index, key, value)
        for index, entries in optimizer.state_dict()["state"].items()
        for key, value in entries.items()
    ]


def test_chunk_sizes_cover_every_tensor_with_at_most_four_sizes():
    for count in range(40):
        sizes = chunk_sizes(count)
        assert sum(sizes) == count
        assert set(sizes) <= {8, 4, 2, 1}
        assert all(sizes.count(size) <= 1 for size in (4, 2, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cls", list(CASES), ids=IDS)
def test_fused_equals_the_for_loop_and_a_scheduled_lr_compiles_nothing_new(cls, dtype, device):
    fused_run, fused = _build(cls, device, dtype, fused=True)
    loop_run, loop = _build(cls, device, dtype, foreach=False)
    fused_scheduler, loop_scheduler = _scheduler(fused), _scheduler(loop)
    # The first three steps meet every chunk of this run (a gradient is missing at step 1).
    _steps(fused_run, fused, range(3), fused_scheduler)
    _steps(loop_run, loop, range(3), loop_scheduler)
    graphs = _graphs()
    _steps(fused_run, fused, range(3, STEPS), fused_scheduler)
    _steps(loop_run, loop, range(3, STEPS), loop_scheduler)
    assert _graphs() == graphs, "a new lr or step count compiled again"
    assert float(fused.param_groups[0]["lr"]) < float(CASES[cls]["lr"]) * 0.7**5
    tolerance = TOLERANCES[dtype]
    if dtype == torch.float64:
        tolerance = FLOAT32_STATE.get(cls, tolerance)
    _assert_params_close(fused_run.params, loop_run.params, **tolerance)
    loop_items = {(index, key): value for index, key, value in _state_items(loop)}
    fused_items = _state_items(fused)
    assert {(index, key) for index, key, _ in fused_items} == set(loop_items)
    for index, key, value in fused_items:
        expected = loop_items[index, key]
        if isinstance(value, Tensor):
            if key == "step" and cls is not optimlib.ASGD:  # float32 on the device, as torch's
                assert (value.dtype, value.device) == (torch.float32, fused_run.params[0].device)
            expected = expected.to(value.device, value.dtype)
        torch.testing.assert_close(value, expected, **tolerance)


@pytest.mark.parametrize("cls", list(CASES), ids=IDS)
def test_grad_scaler_unscales_inside_the_step_and_skips_an_overflow(cls, device):
    """No step (parameters, state, counters unchanged) when an inf is found; otherwise the
    gradients are unscaled in place and the step is the for-loop's."""
    scaled_run, scaled = _build(cls, device, torch.float32, fused=True)
    loop_run, loop = _build(cls, device, torch.float32, foreach=False)
    # Schedule-free AdamW advances its clocks before updating: GradScaler skips its steps itself.
    supports = getattr(scaled, "_step_supports_amp_scaling", False)
    assert supports is (cls is not optimlib.ScheduleFreeAdamW)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10)
    for step in range(8):
        overflow = step in (2, 5)
        scaler_step_and_check(scaled_run, scaled, scaler, step, overflow)
        if overflow:
            continue
        loop_run.gradients(step)
        loop.step()
    _assert_params_close(scaled_run.params, loop_run.params, **TOLERANCES[torch.float32])


def _reloaded(state_dict: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("cls", list(CASES), ids=IDS)
def test_a_resumed_fused_checkpoint_continues_exactly(cls, device):
    run, optimizer = _build(cls, device, torch.float32, fused=True)
    _steps(run, optimizer, range(5))
    checkpoint = _reloaded(optimizer.state_dict())
    resumed_run, resumed = _build(cls, device, torch.float32, fused=True)
    for mine, theirs in zip(resumed_run.params, run.params, strict=True):
        mine.data.copy_(theirs.detach())
    resumed.load_state_dict(checkpoint)
    _steps(run, optimizer, range(5, 9))
    _steps(resumed_run, resumed, range(5, 9))
    _assert_params_close(run.params, resumed_run.params, **EXACT)


@pytest.mark.parametrize("direction", ["fused_to_torch", "torch_to_fused"])
@pytest.mark.parametrize("cls", [cls for cls in CASES if TWINS[cls]], ids=lambda c: c.__name__)
def test_checkpoints_move_between_fused_and_torchs_for_loop(cls, direction, device):
    twin = TWINS[cls]
    first, second = (cls, twin) if direction == "fused_to_torch" else (twin, cls)
    options = {"fused": True} if first is cls else {"foreach": False}
    run = Run(device, torch.float32)
    saver = first([{"params": run.params}], **copy.deepcopy(CASES[cls]), **options)
    _steps(run, saver, range(5))
    resumed_run = Run(device, torch.float32)
    for mine, theirs in zip(resumed_run.params, run.params, strict=True):
        mine.data.copy_(theirs.detach())
    options = {"fused": True} if second is cls else {"foreach": False}
    resumed = second([{"params": resumed_run.params}], **copy.deepcopy(CASES[cls]), **options)
    resumed.load_state_dict(_reloaded(saver.state_dict()))
    _steps(run, saver, range(5, 9))
    _steps(resumed_run, resumed, range(5, 9))
    _assert_params_close(run.params, resumed_run.params, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("cls", list(CASES), ids=IDS)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"foreach": True}, "`fused` and `foreach` cannot be `True` together."),
        ({"differentiable": True}, "`fused` does not support `differentiable`"),
    ],
    ids=["foreach", "differentiable"],
)
def test_construction_errors_are_torchs(cls, options, message):
    if "differentiable" in options and "differentiable" not in _arguments(cls):
        pytest.skip(f"{cls.__name__} has no differentiable option")
    with pytest.raises(RuntimeError, match=message.replace("`", ".")):
        cls([torch.ones(2, requires_grad=True)], fused=True, **options)


def _arguments(cls: type) -> dict[str, Any]:
    return dict(inspect.signature(cls.__init__).parameters)


def test_an_lr_tensor_changed_in_place_compiles_nothing_new(device):
    runs = []
    for fused in (True, False):
        run = Run(device, torch.float64)
        lr = torch.tensor(0.01, dtype=torch.float64)
        optimizer = optimlib.RMSprop(run.params, lr=lr, fused=fused, foreach=None)
        _steps(run, optimizer, range(3))
        graphs = _graphs()
        for step in range(3, 10):
            optimizer.param_groups[0]["lr"].mul_(0.8)  # in place, as a capturable schedule would
            _steps(run, optimizer, range(step, step + 1))
        if fused:
            assert _graphs() == graphs
        runs.append(run)
    _assert_params_close(runs[0].params, runs[1].params, **TOLERANCES[torch.float64])


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate")
@pytest.mark.parametrize("cls", [optimlib.RMSprop, optimlib.NAdam], ids=lambda c: c.__name__)
def test_a_twice_listed_parameter_and_a_transposed_gradient_take_the_for_loop(cls, device):
    """Both are updated as the for-loop updates them (a duplicate twice, in turn)."""
    runs = []
    for fused in (True, False):
        generator = torch.Generator().manual_seed(3)
        weights = [torch.randn(4, 6, generator=generator).to(device).requires_grad_() for _ in "ab"]
        shared = torch.randn(5, generator=generator).to(device).requires_grad_()
        choice = {"fused": True} if fused else {"foreach": False}
        optimizer = cls([*weights, shared, shared], lr=0.01, **choice)
        for step in range(4):
            weights[0].grad = torch.cos(weights[0].detach().t() + step).t()  # not contiguous
            weights[1].grad = torch.sin(weights[1].detach() + step)
            shared.grad = torch.sin(shared.detach() - step)
            optimizer.step()
        runs.append([*weights, shared])
    _assert_params_close(runs[0], runs[1], **TOLERANCES[torch.float32])


def test_one_graph_serves_chunks_of_equal_and_of_different_sizes(device):
    """Without duck shapes, equal sizes at the first compile do not tie later chunks."""
    optimizers = []
    for sizes in ((100, 100), (100, 300), (700, 20)):
        params = [torch.ones(n, device=device, requires_grad=True) for n in sizes]
        for param in params:
            param.grad = torch.full_like(param, 0.5)
        optimizers.append(optimlib.Lion(params, lr=0.01, fused=True))
    optimizers[0].step()
    graphs = _graphs()
    for optimizer in optimizers[1:]:
        optimizer.step()
    assert _graphs() == graphs
