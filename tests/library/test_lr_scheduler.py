"""optimlib.lr_scheduler against torch.optim.lr_scheduler: the same lrs, the same state."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

import optimlib
from optimlib import lr_scheduler as ours

STEPS = 300


def _lambda(epoch):
    return 0.5 ** (epoch // 10)


def _multiplier(epoch):
    return 0.99 if epoch % 3 else 1.01


# name -> (factory(module, optimizer), optimizer kind); module is ours or torch's.
SCHEDULES = {
    "StepLR": (lambda m, o: m.StepLR(o, step_size=10, gamma=0.5), "sgd"),
    "StepLR-gamma1.5": (lambda m, o: m.StepLR(o, step_size=7, gamma=1.01), "sgd"),
    "MultiStepLR": (lambda m, o: m.MultiStepLR(o, milestones=[5, 40, 41, 200], gamma=0.3), "sgd"),
    "LambdaLR": (lambda m, o: m.LambdaLR(o, lr_lambda=_lambda), "sgd"),
    "LambdaLR-per-group": (lambda m, o: m.LambdaLR(o, [_lambda, lambda e: 1 / (1 + e)]), "sgd"),
    "MultiplicativeLR": (lambda m, o: m.MultiplicativeLR(o, lr_lambda=_multiplier), "sgd"),
    "ExponentialLR": (lambda m, o: m.ExponentialLR(o, gamma=0.98), "sgd"),
    "ConstantLR": (lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=30), "sgd"),
    "LinearLR": (
        lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=50),
        "sgd",
    ),
    "PolynomialLR": (lambda m, o: m.PolynomialLR(o, total_iters=200, power=2.0), "sgd"),
    "CosineAnnealingLR": (lambda m, o: m.CosineAnnealingLR(o, T_max=40, eta_min=1e-4), "sgd"),
    "CosineAnnealingWarmRestarts": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-5),
        "sgd",
    ),
    "CyclicLR-triangular": (lambda m, o: m.CyclicLR(o, 1e-3, [0.1, 0.05], step_size_up=15), "sgd"),
    "CyclicLR-triangular2": (
        lambda m, o: m.CyclicLR(
            o, 1e-3, 0.1, step_size_up=10, step_size_down=20, mode="triangular2"
        ),
        "sgd",
    ),
    "CyclicLR-exp_range-adam": (
        lambda m, o: m.CyclicLR(o, 1e-3, 0.1, step_size_up=12, mode="exp_range", gamma=0.995),
        "adam",
    ),
    "OneCycleLR": (lambda m, o: m.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=STEPS), "sgd"),
    "OneCycleLR-three-phase-linear-adam": (
        lambda m, o: m.OneCycleLR(
            o,
            max_lr=0.05,
            epochs=10,
            steps_per_epoch=30,
            anneal_strategy="linear",
            three_phase=True,
        ),
        "adam",
    ),
    "SequentialLR": (
        lambda m, o: m.SequentialLR(
            o,
            [
                m.LinearLR(o, start_factor=0.1, total_iters=20),
                m.CosineAnnealingLR(o, T_max=100),
                m.ExponentialLR(o, gamma=0.99),
            ],
            milestones=[20, 120],
        ),
        "sgd",
    ),
    "ChainedScheduler": (
        lambda m, o: m.ChainedScheduler(
            [m.ConstantLR(o, factor=0.5, total_iters=10), m.ExponentialLR(o, gamma=0.99)]
        ),
        "sgd",
    ),
}


def _optimizer(kind):
    weights = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    groups = [{"params": weights[:1]}, {"params": weights[1:], "lr": 0.05}]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=0.1)
    return optimlib.SGD(groups, lr=0.1, momentum=0.9)


def _trace(scheduler, optimizer, steps):
    """lrs and momenta of every group after each step."""
    record = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        record.append(
            [(g["lr"], g.get("momentum"), g.get("betas")) for g in optimizer.param_groups]
            + [tuple(scheduler.get_last_lr())]
        )
    return record


@pytest.mark.parametrize("name", SCHEDULES)
def test_same_lrs_as_torch_for_every_step(name):
    factory, kind = SCHEDULES[name]
    traces = []
    for module in (ours, torch_sched):
        optimizer = _optimizer(kind)
        scheduler = factory(module, optimizer)
        traces.append(
            [
                [(g["lr"], g.get("momentum"), g.get("betas")) for g in optimizer.param_groups],
                *_trace(scheduler, optimizer, STEPS),
            ]
        )
    assert traces[0] == traces[1]


@pytest.mark.parametrize("direction", ["ours->ours", "torch->ours", "ours->torch"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_resumes_identically_both_ways(name, direction):
    factory, kind = SCHEDULES[name]
    source, target = {
        "ours->ours": (ours, ours),
        "torch->ours": (torch_sched, ours),
        "ours->torch": (ours, torch_sched),
    }[direction]
    optimizer = _optimizer(kind)
    scheduler = factory(source, optimizer)
    _trace(scheduler, optimizer, 120)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)

    resumed_optimizer = _optimizer(kind)
    resumed = factory(target, resumed_optimizer)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    assert _trace(scheduler, optimizer, 150) == _trace(resumed, resumed_optimizer, 150)


@pytest.mark.parametrize("name", SCHEDULES)
def test_state_dict_has_torchs_entries(name):
    factory, kind = SCHEDULES[name]
    mine = factory(ours, _optimizer(kind)).state_dict()
    theirs = factory(torch_sched, _optimizer(kind)).state_dict()
    assert mine.keys() == theirs.keys()


def test_reduce_lr_on_plateau_matches_torch_and_resumes():
    metrics = [1.0 / (1 + i) if i < 30 else 0.03 + 0.001 * math.sin(i) for i in range(200)]
    options = {
        "mode": "min",
        "factor": 0.5,
        "patience": 5,
        "cooldown": 3,
        "min_lr": [1e-3, 0.0],
        "threshold": 1e-3,
    }
    traces = []
    for module in (ours, torch_sched):
        optimizer = _optimizer("sgd")
        scheduler = module.ReduceLROnPlateau(optimizer, **options)
        trace = []
        for metric in metrics[:100]:
            scheduler.step(metric)
            trace.append(scheduler.get_last_lr())
        saved = (optimizer.state_dict(), scheduler.state_dict())
        optimizer = _optimizer("sgd")
        scheduler = module.ReduceLROnPlateau(optimizer, mode="max")
        optimizer.load_state_dict(saved[0])
        scheduler.load_state_dict(saved[1])
        for metric in metrics[100:]:
            scheduler.step(metric)
            trace.append(scheduler.get_last_lr())
        traces.append(trace)
    assert traces[0] == traces[1]
    assert traces[0][-1][0] < 0.1 / 8


def test_works_with_torch_optimizers_and_warns_about_step_order():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = ours.StepLR(optimizer, step_size=1, gamma=0.5)
    with pytest.warns(UserWarning, match="lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)"):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_one_cycle_refuses_steps_beyond_total_steps():
    optimizer = _optimizer("sgd")
    scheduler = ours.OneCycleLR(optimizer, max_lr=0.1, total_steps=5)
    for _ in range(5):  # steps 1 to 5 of 5 are fine
        optimizer.step()
        scheduler.step()
    optimizer.step()
    with pytest.raises(ValueError, match="more than its total_steps"):
        scheduler.step()


@pytest.mark.parametrize(
    ("build", "error", "pattern"),
    [
        (lambda o: ours.StepLR(o, step_size=0), ValueError, r"Invalid step_size value: 0"),
        (lambda o: ours.StepLR(o, step_size=2.5), TypeError, r"Invalid step_size value: 2\.5"),
        (lambda o: ours.StepLR(o, step_size=5, gamma=0), ValueError, r"Invalid gamma value: 0"),
        (lambda o: ours.ExponentialLR(o, gamma=-0.9), ValueError, r"Invalid gamma"),
        (lambda o: ours.MultiStepLR(o, milestones=[10, 5]), ValueError, r"strictly increasing"),
        (lambda o: ours.MultiStepLR(o, milestones=[-1]), ValueError, r"Invalid milestones"),
        (lambda o: ours.ConstantLR(o, factor=1.5), ValueError, r"Invalid factor value: 1\.5"),
        (lambda o: ours.LinearLR(o, start_factor=0), ValueError, r"Invalid start_factor"),
        (lambda o: ours.CosineAnnealingLR(o, T_max=0), ValueError, r"Invalid T_max"),
        (
            lambda o: ours.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
            ValueError,
            r"Invalid T_mult",
        ),
        (lambda o: ours.CyclicLR(o, 0.01, 0.1, mode="sawtooth"), ValueError, r"Invalid mode"),
        (lambda o: ours.OneCycleLR(o, max_lr=0.1), ValueError, r"give total_steps"),
        (
            lambda o: ours.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5),
            ValueError,
            r"Invalid pct_start",
        ),
        (
            lambda o: ours.OneCycleLR(o, max_lr=[0.1], total_steps=10),
            ValueError,
            r"one per parameter group",
        ),
        (lambda o: ours.LambdaLR(o, lr_lambda=3), TypeError, r"not callable"),
        (lambda o: ours.ReduceLROnPlateau(o, factor=1.0), ValueError, r"Invalid factor"),
        (lambda o: ours.ReduceLROnPlateau(o, mode="up"), ValueError, r"Invalid mode"),
        (
            lambda o: ours.SequentialLR(o, [ours.StepLR(o, 5)], milestones=[3]),
            ValueError,
            r"1 schedulers need 0 milestones",
        ),
    ],
)
def test_bad_arguments_are_refused_clearly(build, error, pattern):
    with pytest.raises(error, match=pattern):
        build(_optimizer("sgd"))


@pytest.mark.parametrize("plateau_module", [ours, torch_sched], ids=["optimlib", "torch"])
def test_composites_refuse_either_librarys_plateau_scheduler(plateau_module):
    optimizer = _optimizer("sgd")
    plateau = plateau_module.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        ours.ChainedScheduler([ours.StepLR(optimizer, 5), plateau])
