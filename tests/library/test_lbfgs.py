"""optimlib.LBFGS against torch.optim.LBFGS, and its own contract."""

from __future__ import annotations

import copy
import inspect
import io
import math
from typing import Any

import pytest
import torch
from torch import Tensor

import optimlib


def assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Recursive equality for optimizer state: tensors, numbers, lists, dicts."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        torch.testing.assert_close(
            torch.as_tensor(a),
            torch.as_tensor(b),
            rtol=1e-12,
            atol=1e-14,
            check_dtype=False,
            msg=lambda m: f"{path}: {m}",
        )
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{index}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-14), path
    else:
        assert a == b, path


class Problem:
    """A 6-dimensional Rosenbrock valley spread over three parameters (0-d included)."""

    def __init__(self, device="cpu", seed=0):
        generator = torch.Generator().manual_seed(seed)
        start = torch.rand(6, generator=generator, dtype=torch.float64) * 2 - 1.5
        self.params = [
            start[:3].clone().to(device).requires_grad_(),
            start[3:5].reshape(2, 1).clone().to(device).requires_grad_(),
            start[5].clone().to(device).requires_grad_(),
        ]

    def loss(self) -> Tensor:
        x = torch.cat([p.reshape(-1) for p in self.params])
        return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()

    def closure_for(self, optimizer, sign=1.0):
        def closure():
            optimizer.zero_grad()
            loss = sign * self.loss()
            loss.backward()
            return loss

        return closure


CONFIGS = [
    {},
    {"lr": 0.5, "max_iter": 5},
    {"line_search_fn": "strong_wolfe"},
    {"line_search_fn": "strong_wolfe", "history_size": 3, "max_iter": 7, "max_eval": 9},
    {"lr": 0.2, "history_size": 2, "tolerance_change": 1e-5},
    {"line_search_fn": "strong_wolfe", "tolerance_grad": 1e-3},
]


#: torch.optim.LBFGS takes maximize from torch 2.14 on; optimlib's has it on every torch.
TORCH_HAS_MAXIMIZE = "maximize" in inspect.signature(torch.optim.LBFGS).parameters


def _run(cls, config, device="cpu", steps=6, maximize=False):
    problem = Problem(device)
    if maximize and cls is torch.optim.LBFGS and not TORCH_HAS_MAXIMIZE:
        pytest.skip(f"torch {torch.__version__}'s LBFGS has no maximize option")
    options = {"maximize": maximize} if cls is optimlib.LBFGS or TORCH_HAS_MAXIMIZE else {}
    optimizer = cls(problem.params, **options, **config)
    closure = problem.closure_for(optimizer, sign=-1.0 if maximize else 1.0)
    losses = [optimizer.step(closure).item() for _ in range(steps)]
    return problem, optimizer, losses


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matches_torch_lbfgs(config, maximize, device):
    ours, opt_ours, losses_ours = _run(optimlib.LBFGS, config, device, maximize=maximize)
    theirs, opt_theirs, losses_theirs = _run(torch.optim.LBFGS, config, device, maximize=maximize)
    assert losses_ours == pytest.approx(losses_theirs, rel=1e-12, abs=1e-14)
    for a, b in zip(ours.params, theirs.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    ours_saved, theirs_saved = opt_ours.state_dict(), opt_theirs.state_dict()
    if not TORCH_HAS_MAXIMIZE:
        assert ours_saved["param_groups"][0].pop("maximize") is False
    assert_same_state(ours_saved, theirs_saved)
    assert abs(losses_ours[-1]) < 0.5 * abs(losses_ours[0])  # it made progress


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours", "ours->ours"])
@pytest.mark.parametrize("config", CONFIGS[2:4], ids=str)
def test_state_dict_resumes_identically_both_ways(config, direction):
    source, target = {
        "ours->torch": (optimlib.LBFGS, torch.optim.LBFGS),
        "torch->ours": (torch.optim.LBFGS, optimlib.LBFGS),
        "ours->ours": (optimlib.LBFGS, optimlib.LBFGS),
    }[direction]
    problem, optimizer, _ = _run(source, config, steps=2)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_problem = Problem()
    with torch.no_grad():
        for p, q in zip(resumed_problem.params, problem.params, strict=True):
            p.copy_(q)
    resumed = target(resumed_problem.params, **config)
    resumed.load_state_dict(saved)
    for _ in range(3):
        optimizer.step(problem.closure_for(optimizer))
        resumed.step(resumed_problem.closure_for(resumed))
    for a, b in zip(problem.params, resumed_problem.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_deepcopy_continues_like_the_original():
    problem, optimizer, _ = _run(optimlib.LBFGS, CONFIGS[2], steps=1)
    clone = copy.deepcopy(optimizer)
    twin = Problem()
    twin.params = clone.param_groups[0]["params"]
    optimizer.step(problem.closure_for(optimizer))
    clone.step(twin.closure_for(clone))
    for a, b in zip(problem.params, twin.params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_closure_is_a_clear_error_and_changes_nothing():
    problem = Problem()
    optimizer = optimlib.LBFGS(problem.params)
    problem.loss().backward()
    before = [p.detach().clone() for p in problem.params]
    with pytest.raises(ValueError, match=r"LBFGS\.step needs a closure"):
        optimizer.step()
    for p, q in zip(problem.params, before, strict=True):
        assert torch.equal(p.detach(), q)


def test_two_parameter_groups_are_refused():
    problem = Problem()
    with pytest.raises(ValueError, match=r"single parameter group"):
        optimlib.LBFGS([{"params": problem.params[:1]}, {"params": problem.params[1:]}])
    optimizer = optimlib.LBFGS(problem.params[:1])
    with pytest.raises(ValueError, match=r"single parameter group"):
        optimizer.add_param_group({"params": problem.params[1:]})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"lr": -1}, ValueError, r"Invalid lr value: -1"),
        ({"max_iter": 0}, ValueError, r"Invalid max_iter value: 0 \(must be in \[1, inf\)\)"),
        ({"max_iter": 2.5}, TypeError, r"Invalid max_iter value: 2\.5 \(must be an integer"),
        ({"max_eval": 0}, ValueError, r"Invalid max_eval"),
        ({"history_size": 0}, ValueError, r"Invalid history_size"),
        ({"tolerance_grad": math.nan}, ValueError, r"Invalid tolerance_grad"),
        ({"tolerance_change": math.nan}, ValueError, r"Invalid tolerance_change"),
        ({"line_search_fn": "armijo"}, ValueError, r"Invalid line_search_fn: 'armijo'"),
        ({"maximize": "no"}, TypeError, r"Invalid maximize"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        optimlib.LBFGS(Problem().params, **kwargs)


def test_defaults_match_torch():
    params = Problem().params
    ours, theirs = optimlib.LBFGS(params).defaults, torch.optim.LBFGS(params).defaults
    if not TORCH_HAS_MAXIMIZE:
        assert ours.pop("maximize") is False
    assert ours == theirs
    assert optimlib.LBFGS(params, max_iter=8).defaults["max_eval"] == 10


def test_an_infinite_tolerance_is_accepted_as_torch_accepts_it():
    for cls in (torch.optim.LBFGS, optimlib.LBFGS):
        problem = Problem()
        optimizer = cls(problem.params, tolerance_grad=float("inf"), tolerance_change=math.inf)
        optimizer.step(problem.closure_for(optimizer))
    ours, theirs = Problem(), Problem()
    for problem, cls in ((ours, optimlib.LBFGS), (theirs, torch.optim.LBFGS)):
        optimizer = cls(problem.params, tolerance_grad=float("inf"))
        optimizer.step(problem.closure_for(optimizer))
    for a, b in zip(ours.params, theirs.params, strict=True):
        assert torch.equal(a, b)


def test_the_cubic_step_of_a_nan_bracket_is_the_midpoint():
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    step = optimlib.lbfgs.cubic_minimizer(0.0, one, nan, 1.0, one, -one)
    assert step == 0.5


def test_a_loaded_checkpoint_keeps_torchs_group_keys():
    problem = Problem()
    theirs = torch.optim.LBFGS(problem.params)
    theirs.step(problem.closure_for(theirs))
    ours = optimlib.LBFGS(Problem().params)
    # Before torch 2.14 torch's LBFGS has no maximize; a loaded group gains optimlib's.
    expected = set(theirs.param_groups[0]) | {"maximize"}
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert set(ours.param_groups[0]) == expected
    ours.load_state_dict(copy.deepcopy(ours.state_dict()))
    assert set(ours.param_groups[0]) == expected
    assert "differentiable" not in expected


def test_a_negative_infinite_tolerance_gives_torchs_result():
    runs = []
    for cls in (optimlib.LBFGS, torch.optim.LBFGS):
        problem = Problem()
        optimizer = cls(problem.params, tolerance_grad=-math.inf, max_iter=3)
        loss = optimizer.step(problem.closure_for(optimizer))
        runs.append((float(loss.detach()), [p.detach().clone() for p in problem.params]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
