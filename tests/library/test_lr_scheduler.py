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
        (
            lambda o: ours.StepLR(o, step_size=0),
            ValueError,
            r"Invalid step_size value: 0 \(must be in \[1, inf\)\)",
        ),
        (lambda o: ours.StepLR(o, step_size=-3), ValueError, r"Invalid step_size value: -3"),
        (
            lambda o: ours.StepLR(o, step_size=2.5),
            ValueError,
            r"Invalid step_size value: 2\.5 \(must be a whole number\)",
        ),
        (lambda o: ours.StepLR(o, step_size=True), TypeError, r"Invalid step_size value: True"),
        (lambda o: ours.StepLR(o, step_size="3"), TypeError, r"Invalid step_size value: '3'"),
        (
            lambda o: ours.StepLR(o, step_size=5, gamma=math.nan),
            ValueError,
            r"Invalid gamma value: nan \(must be in \[0, inf\)\)",
        ),
        (lambda o: ours.StepLR(o, step_size=5, gamma=math.inf), ValueError, r"Invalid gamma"),
        (lambda o: ours.ExponentialLR(o, gamma=-0.9), ValueError, r"Invalid gamma"),
        (lambda o: ours.MultiStepLR(o, milestones=[-1]), ValueError, r"Invalid milestones"),
        (lambda o: ours.MultiStepLR(o, milestones=[2.5]), ValueError, r"Invalid milestones"),
        (lambda o: ours.ConstantLR(o, factor=1.5), ValueError, r"Invalid factor value: 1\.5"),
        (lambda o: ours.ConstantLR(o, total_iters=0), ValueError, r"Invalid total_iters value: 0"),
        (lambda o: ours.LinearLR(o, start_factor=0), ValueError, r"Invalid start_factor"),
        (lambda o: ours.PolynomialLR(o, total_iters=0), ValueError, r"Invalid total_iters"),
        (lambda o: ours.CosineAnnealingLR(o, T_max=0), ValueError, r"Invalid T_max"),
        (lambda o: ours.CosineAnnealingLR(o, T_max=-10), ValueError, r"Invalid T_max"),
        (lambda o: ours.CosineAnnealingLR(o, T_max=math.nan), ValueError, r"Invalid T_max"),
        (
            lambda o: ours.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
            ValueError,
            r"Invalid T_mult",
        ),
        (
            lambda o: ours.CosineAnnealingWarmRestarts(o, T_0=2.5),
            ValueError,
            r"Invalid T_0 value: 2\.5 \(must be a whole number\)",
        ),
        (lambda o: ours.CyclicLR(o, 0.01, 0.1, mode="sawtooth"), ValueError, r"Invalid mode"),
        (
            lambda o: ours.CyclicLR(o, 0.01, 0.1, step_size_up=0),
            ValueError,
            r"Invalid step_size_up",
        ),
        (
            lambda o: ours.CyclicLR(o, 0.01, 0.1, step_size_down=-1),
            ValueError,
            r"Invalid step_size_down",
        ),
        (
            lambda o: ours.CyclicLR(o, 0.01, 0.1, mode="exp_range", gamma=math.nan),
            ValueError,
            r"Invalid gamma value: nan",
        ),
        (lambda o: ours.OneCycleLR(o, max_lr=0.1), ValueError, r"give total_steps"),
        (
            lambda o: ours.OneCycleLR(o, max_lr=0.1, total_steps=10.5),
            ValueError,
            r"Invalid total_steps value: 10\.5",
        ),
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
        (lambda o: ours.ReduceLROnPlateau(o, patience=2.5), ValueError, r"Invalid patience"),
        (lambda o: ours.ReduceLROnPlateau(o, threshold=-1e-4), ValueError, r"Invalid threshold"),
        (
            lambda o: ours.SequentialLR(o, [ours.StepLR(o, 5)], milestones=[3]),
            ValueError,
            r"1 schedulers need 0 milestones",
        ),
        (
            lambda o: ours.SequentialLR(
                o, [ours.StepLR(o, 5), ours.StepLR(o, 3), ours.StepLR(o, 2)], milestones=[10, 5]
            ),
            ValueError,
            r"Invalid milestones: \[10, 5\] \(must be non-decreasing\)",
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


# ------------------------------------------- what torch accepts, with torch's lrs
#
# Each case builds a scheduler with the same arguments in both libraries, over
# optimlib.SGD and torch.optim.SGD in float64, and compares every lr and momentum.


def _sgd(module, lr=0.1):
    """optimlib.SGD for our schedulers, torch.optim.SGD for torch's: float64, two groups."""
    weights = [
        torch.ones(2, dtype=torch.float64, requires_grad=True),
        torch.ones(3, dtype=torch.float64, requires_grad=True),
    ]
    groups = [{"params": weights[:1]}, {"params": weights[1:], "lr": lr / 2}]
    optimizer_class = optimlib.SGD if module is ours else torch.optim.SGD
    return optimizer_class(groups, lr=lr, momentum=0.9)


def _plateau(scheduler):
    return isinstance(scheduler, (ours.ReduceLROnPlateau, torch_sched.ReduceLROnPlateau))


def _step(optimizer, scheduler):
    optimizer.step()
    if _plateau(scheduler):
        scheduler.step(1.0)  # a metric that never improves: the lr keeps being reduced
    else:
        scheduler.step()


def _values(optimizer):
    return [
        (float(g["lr"]), float(g["momentum"] if "momentum" in g else g["betas"][0]))
        for g in optimizer.param_groups
    ]


def _same_as_torch(build_ours, build_torch=None, steps=40):
    """Our scheduler's lrs and momenta over ``steps`` steps, asserted equal to torch's;
    returns both schedulers, ours first."""
    traces, schedulers = [], []
    for module, build in ((ours, build_ours), (torch_sched, build_torch or build_ours)):
        optimizer = _sgd(module)
        scheduler = build(module, optimizer)
        trace = [_values(optimizer)]
        for _ in range(steps):
            _step(optimizer, scheduler)
            trace.append(_values(optimizer))
        traces.append(trace)
        schedulers.append(scheduler)
    assert traces[0] == traces[1]
    return schedulers


# name -> (factory(module, optimizer, count), whether torch takes numpy integers there);
# count(3) is np.int64(3) for our scheduler, and for torch's where it takes them.
NUMPY_COUNTS = {
    "StepLR-step_size": (lambda m, o, n: m.StepLR(o, step_size=n(3), gamma=0.5), True),
    "MultiStepLR-milestones": (lambda m, o, n: m.MultiStepLR(o, [n(3), n(7)]), True),
    "ConstantLR-total_iters": (lambda m, o, n: m.ConstantLR(o, 0.5, total_iters=n(4)), True),
    "LinearLR-total_iters": (lambda m, o, n: m.LinearLR(o, 0.2, total_iters=n(6)), True),
    "PolynomialLR-total_iters": (lambda m, o, n: m.PolynomialLR(o, total_iters=n(30)), True),
    "CosineAnnealingLR-T_max": (lambda m, o, n: m.CosineAnnealingLR(o, T_max=n(10)), True),
    "CosineAnnealingWarmRestarts-T_0-T_mult": (
        lambda m, o, n: m.CosineAnnealingWarmRestarts(o, T_0=n(5), T_mult=n(2)),
        False,  # torch insists on int
    ),
    "CyclicLR-step_sizes": (
        lambda m, o, n: m.CyclicLR(o, 0.01, 0.1, step_size_up=n(5), step_size_down=n(3)),
        True,
    ),
    "OneCycleLR-total_steps": (lambda m, o, n: m.OneCycleLR(o, 0.1, total_steps=n(40)), False),
    "OneCycleLR-epochs": (
        lambda m, o, n: m.OneCycleLR(o, 0.1, epochs=n(4), steps_per_epoch=n(10)),
        False,
    ),
    "ReduceLROnPlateau-patience-cooldown": (
        lambda m, o, n: m.ReduceLROnPlateau(o, patience=n(2), cooldown=n(1)),
        True,
    ),
    "SequentialLR-milestones": (
        lambda m, o, n: m.SequentialLR(
            o, [m.ConstantLR(o, 0.5), m.ExponentialLR(o, 0.9)], milestones=[n(8)]
        ),
        True,
    ),
}


@pytest.mark.parametrize("name", NUMPY_COUNTS)
def test_numpy_integer_counts_match_torch_and_checkpoint_with_weights_only(name):
    np = pytest.importorskip("numpy")
    factory, torch_takes_numpy = NUMPY_COUNTS[name]
    mine, _ = _same_as_torch(
        lambda m, o: factory(m, o, np.int64),
        lambda m, o: factory(m, o, np.int64 if torch_takes_numpy else int),
    )
    buffer = io.BytesIO()
    torch.save(mine.state_dict(), buffer)
    buffer.seek(0)
    # numpy scalars in the state would make torch.load(weights_only=True) refuse it
    assert torch.load(buffer, weights_only=True).keys() == mine.state_dict().keys()


FLOAT_ARGUMENTS = {
    "CosineAnnealingLR-T_max-10.0": lambda m, o: m.CosineAnnealingLR(o, T_max=10.0),
    "CosineAnnealingLR-T_max-2.5": lambda m, o: m.CosineAnnealingLR(o, T_max=2.5, eta_min=1e-3),
    "StepLR-step_size-3.0": lambda m, o: m.StepLR(o, step_size=3.0, gamma=0.5),
    "MultiStepLR-milestones-3.0": lambda m, o: m.MultiStepLR(o, milestones=[3.0, 7.0]),
    "ConstantLR-total_iters-4.0": lambda m, o: m.ConstantLR(o, 0.5, total_iters=4.0),
    "LinearLR-total_iters-6.0": lambda m, o: m.LinearLR(o, 0.2, total_iters=6.0),
    "PolynomialLR-total_iters-30.0": lambda m, o: m.PolynomialLR(o, total_iters=30.0),
    "CyclicLR-step_sizes-4.5-2.5": lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, step_size_up=4.5, step_size_down=2.5
    ),
    "ReduceLROnPlateau-patience-2.0": lambda m, o: m.ReduceLROnPlateau(
        o, patience=2.0, cooldown=1.0
    ),
    "SequentialLR-milestones-8.0": lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, 0.5), m.ExponentialLR(o, 0.9)], milestones=[8.0]
    ),
}


@pytest.mark.parametrize("name", FLOAT_ARGUMENTS)
def test_float_arguments_torch_accepts_match_torch(name):
    _same_as_torch(FLOAT_ARGUMENTS[name])


@pytest.mark.parametrize("milestones", [[3, 3, 6], [6, 3], [9, 3, 9, 3, 3]], ids=str)
def test_multistep_repeated_and_unsorted_milestones_match_torch(milestones):
    schedulers = _same_as_torch(lambda m, o: m.MultiStepLR(o, milestones, gamma=0.5))
    jumped = []
    for scheduler in schedulers:  # the closed form (a jump to a step) counts repeats too
        with pytest.warns(UserWarning, match="epoch parameter"):
            scheduler.step(4)
        jumped.append(scheduler.get_last_lr())
    assert jumped[0] == jumped[1]
    assert jumped[0][0] == 0.1 * 0.5 ** sum(m <= 4 for m in milestones)


ZERO_GAMMA = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=3, gamma=0),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[2, 5], gamma=0.0),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0),
    "CyclicLR-exp_range": lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0
    ),
}


@pytest.mark.parametrize("name", ZERO_GAMMA)
def test_zero_gamma_matches_torch(name):
    _same_as_torch(ZERO_GAMMA[name])


EDGE_VALUES = {
    # The rate rises over 4 steps and drops back at once: a sawtooth.
    "CyclicLR-step_size_down-0": lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, step_size_up=4, step_size_down=0
    ),
    # A repeated milestone gives the scheduler between the two no steps at all.
    "SequentialLR-repeated-milestone": lambda m, o: m.SequentialLR(
        o,
        [m.ConstantLR(o, 0.5), m.StepLR(o, 2), m.ExponentialLR(o, 0.9)],
        milestones=[5, 5],
    ),
    "MultiStepLR-milestone-0": lambda m, o: m.MultiStepLR(o, milestones=[0, 4], gamma=0.5),
}


@pytest.mark.parametrize("name", EDGE_VALUES)
def test_edge_values_torch_accepts_match_torch(name):
    _same_as_torch(EDGE_VALUES[name])


def test_reduce_lr_on_plateau_takes_torchs_epoch_argument():
    epochs = []
    for module in (ours, torch_sched):
        optimizer = _sgd(module)
        scheduler = module.ReduceLROnPlateau(optimizer, patience=0)
        with pytest.warns(UserWarning, match="deprecated"):
            scheduler.step(1.0, epoch=7)
            scheduler.step(2.0, epoch=9)
        epochs.append((scheduler.last_epoch, _values(optimizer)))
    assert epochs[0] == epochs[1]
    assert epochs[0][0] == 9


# ----------------------------------------------- a tensor lr stays the same tensor


def _tensor_optimizer(module, kind, tensor_momentum=False):
    """optimlib's or torch's SGD (or Adam) in float64, each group's lr a 0-d tensor."""
    weights = [
        torch.ones(2, dtype=torch.float64, requires_grad=True),
        torch.ones(3, dtype=torch.float64, requires_grad=True),
    ]
    groups = [
        {"params": weights[:1], "lr": torch.tensor(0.1, dtype=torch.float64)},
        {"params": weights[1:], "lr": torch.tensor(0.05, dtype=torch.float64)},
    ]
    library = optimlib if module is ours else torch.optim
    if kind == "adam":
        if tensor_momentum:
            for group in groups:
                group["betas"] = (
                    torch.tensor(0.9, dtype=torch.float64),
                    torch.tensor(0.999, dtype=torch.float64),
                )
        return library.Adam(groups), weights
    if tensor_momentum:
        for group in groups:
            group["momentum"] = torch.tensor(0.9, dtype=torch.float64)
    return library.SGD(groups, lr=0.1, momentum=0.9), weights


def _run_with_gradients(optimizer, weights, scheduler, steps):
    """lrs, momenta and parameters after each step, with a gradient every step."""
    trace = []
    for _ in range(steps):
        for weight in weights:
            weight.grad = torch.cos(weight.detach()) + 0.5
        _step(optimizer, scheduler)
        trace.append(
            (
                _values(optimizer),
                [float(lr) for lr in scheduler.get_last_lr()],
                [weight.tolist() for weight in weights],
            )
        )
    return trace


TENSOR_LR_SCHEDULES = {
    **SCHEDULES,
    "ReduceLROnPlateau": (lambda m, o: m.ReduceLROnPlateau(o, factor=0.5, patience=2), "sgd"),
}


@pytest.mark.parametrize("name", TENSOR_LR_SCHEDULES)
def test_tensor_lr_stays_the_same_tensor_with_torchs_values(name):
    factory, kind = TENSOR_LR_SCHEDULES[name]
    traces = []
    for module in (ours, torch_sched):
        optimizer, weights = _tensor_optimizer(module, kind)
        tensors = [group["lr"] for group in optimizer.param_groups]
        scheduler = factory(module, optimizer)
        traces.append(_run_with_gradients(optimizer, weights, scheduler, 60))
        if module is ours:
            assert len({lrs[0][0] for (lrs, *_) in traces[0]}) > 1  # the schedule did act
            for group, tensor in zip(optimizer.param_groups, tensors, strict=True):
                assert group["lr"] is tensor
            # get_last_lr() gives copies, as torch's does, never the group's own tensor
            assert not any(
                last is group["lr"]
                for last, group in zip(scheduler.get_last_lr(), optimizer.param_groups, strict=True)
            )
    assert traces[0] == traces[1]


CYCLIC = {
    "CyclicLR": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=5, step_size_down=3),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=30),
}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", CYCLIC)
def test_cyclic_momentum_keeps_tensor_momentum_and_betas(name, kind):
    traces = []
    for module in (ours, torch_sched):
        optimizer, weights = _tensor_optimizer(module, kind, tensor_momentum=True)
        key = "betas" if kind == "adam" else "momentum"
        held = [
            (group["lr"], group[key][0] if kind == "adam" else group[key])
            for group in optimizer.param_groups
        ]
        scheduler = CYCLIC[name](module, optimizer)
        traces.append(_run_with_gradients(optimizer, weights, scheduler, 30))
        if module is ours:  # torch puts a float in the momentum's place; we keep the tensor
            for group, (lr, momentum) in zip(optimizer.param_groups, held, strict=True):
                assert group["lr"] is lr
                assert (group[key][0] if kind == "adam" else group[key]) is momentum
    assert traces[0] == traces[1]
