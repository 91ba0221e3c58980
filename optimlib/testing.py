"""A test kit for optimizers: :func:`check_optimizer`.

Write an optimizer, then run::

    from optimlib.testing import check_optimizer
    check_optimizer(lambda params: MyOptimizer(params, lr=0.1))

Each check builds fresh parameters, runs a few steps and compares what
happened with what a well-behaved ``torch.optim.Optimizer`` does. The first
property that fails raises an ``AssertionError`` that names it and says what
was observed; when all hold, a :class:`CheckReport` lists what was checked.
The kit uses only the public optimizer API, so it works for optimlib's
optimizers, ``torch.optim``'s, and yours.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from optimlib.device import available_devices

Factory = Callable[[Any], torch.optim.Optimizer]

SHAPES = ((3, 4), (5,), ())


@dataclass
class CheckReport:
    """What :func:`check_optimizer` verified, and what it could not check and why."""

    name: str
    passed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.name}: {len(self.passed)} checks passed"]
        lines += [f"  ok    {check}" for check in self.passed]
        lines += [f"  skip  {check}: {reason}" for check, reason in self.skipped]
        return "\n".join(lines)


class _Problem:
    """Parameters of several shapes (0-d included) and a smooth, separable loss.

    Separable: each parameter's gradient depends on that parameter only, so
    what happens to one parameter group cannot leak into another's numbers.
    ``unused`` is a parameter the loss never touches: its ``.grad`` stays None.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        draw = lambda shape: torch.randn(shape, generator=generator, dtype=torch.float64)  # noqa: E731
        self.params = [draw(s).to(device=device, dtype=dtype).requires_grad_() for s in SHAPES]
        self.targets = [draw(s).to(device=device, dtype=dtype) for s in SHAPES]
        self.unused = draw((2, 2)).to(device=device, dtype=dtype).requires_grad_()

    @property
    def all_params(self) -> list[Tensor]:
        return [*self.params, self.unused]

    def loss(self) -> Tensor:
        terms = (
            ((p - y) ** 2).sum() + 0.1 * torch.sin(3 * p).sum()
            for p, y in zip(self.params, self.targets, strict=True)
        )
        return cast(Tensor, sum(terms))

    def closure_for(
        self, optimizer: torch.optim.Optimizer, calls: list[bool] | None = None
    ) -> Callable[[], Any]:
        def closure() -> Any:  # a loss tensor, which torch's stubs call float
            if calls is not None:
                calls.append(torch.is_grad_enabled())
            optimizer.zero_grad()
            loss = self.loss()
            loss.backward()
            return loss

        return closure

    def run(
        self, optimizer: torch.optim.Optimizer, steps: int, scheduler: Any | None = None
    ) -> None:
        for _ in range(steps):
            optimizer.step(self.closure_for(optimizer))
            if scheduler is not None:
                scheduler.step()

    def values(self) -> list[Tensor]:
        return [p.detach().clone() for p in self.all_params]


def _fail(check: str, detail: str) -> None:
    raise AssertionError(f"check_optimizer: '{check}' failed: {detail}")


def _same(a: Sequence[Tensor], b: Sequence[Tensor], rtol: float, atol: float) -> bool:
    return all(
        x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol)
        for x, y in zip(a, b, strict=True)
    )


def _name_of(factory: Factory) -> str:
    try:
        problem = _Problem(torch.device("cpu"), torch.float64)
        return type(factory(problem.all_params)).__name__
    except Exception:  # the checks will report the failure properly
        return "optimizer"


def check_optimizer(
    factory: Factory,
    *,
    reference: Factory | None = None,
    steps: int = 8,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    devices: Sequence[torch.device | str] | None = None,
) -> CheckReport:
    """Check that the optimizer built by ``factory(params)`` behaves like a proper
    ``torch.optim.Optimizer``, and optionally like a ``reference`` optimizer.

    Args:
        factory: builds the optimizer under test from ``params``, which is a list
            of tensors or a list of parameter-group dicts; pass it straight to
            your optimizer's constructor.
        reference: another factory; with it, both must follow the same
            trajectory within ``rtol`` and ``atol``.
        steps: steps per run (runs are short: the checks are about behaviour).
        rtol, atol: tolerances for the reference comparison.
        devices: where to check dtype and device handling; by default the CPU
            and every visible CUDA device.

    Returns:
        a :class:`CheckReport` of the checks that passed and those skipped.

    Raises:
        AssertionError: naming the first property that does not hold.
    """
    report = CheckReport(_name_of(factory))
    cpu = torch.device("cpu")

    def dtypes_and_devices(name: str, factory: Factory, device: torch.device, steps: int) -> None:
        for place in devices if devices is not None else available_devices():
            for dtype in (torch.float32, torch.float64):
                _check_dtype_device(name, factory, torch.device(place), dtype, steps)

    # Ordered so that each check can rely on the ones before it (later checks
    # compare runs, which only makes sense once runs are reproducible).
    checks = [
        ("step(closure) calls the closure and returns its loss", _check_closure),
        ("parameters whose .grad is None are left alone", _check_none_grads),
        ("the update is in place and builds no autograd graph", _check_in_place),
        ("two identical runs give identical results", _check_reproducible),
        ("the learning rate is read from param_groups", _check_lr_from_groups),
        ("parameter groups keep their own options", _check_group_options),
        ("dtype and device of parameters and state are preserved", dtypes_and_devices),
        ("a checkpoint resumes exactly and loads with weights_only=True", _check_resume),
    ]
    for name, check in checks:
        skipped = check(name, factory, cpu, steps)
        if skipped:
            report.skipped.append((name, skipped))
        else:
            report.passed.append(name)

    if reference is not None:
        name = "same trajectory as the reference optimizer"
        _check_reference(name, factory, reference, cpu, steps, rtol, atol)
        report.passed.append(name)
    return report


# --------------------------------------------------------------------- checks


def _check_closure(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    problem = _Problem(device, torch.float64)
    optimizer = factory(problem.params)  # every one gets a gradient; None is checked next
    calls: list[bool] = []
    closure = problem.closure_for(optimizer, calls)
    with torch.no_grad():
        expected = problem.loss()
        try:
            returned = optimizer.step(closure)
        except Exception as error:
            why = "never called the closure, and then" if not calls else "called the closure, then"
            _fail(name, f"step(closure) {why} raised {type(error).__name__}: {error}")
    if not calls:
        _fail(name, "step(closure) never called the closure")
    if not all(calls):
        _fail(name, "the closure ran with gradients disabled; wrap it in torch.enable_grad()")
    if not isinstance(returned, Tensor) or not torch.allclose(returned.detach(), expected):
        _fail(name, f"step(closure) returned {returned!r}, not the closure's loss {expected!r}")
    return None


def _check_in_place(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    problem = _Problem(device, torch.float64)
    params = problem.all_params
    optimizer = factory(params)
    pointers = [p.data_ptr() for p in params]
    problem.run(optimizer, steps)
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if any(a is not b for a, b in zip(held, params, strict=True)):
        _fail(name, "param_groups no longer hold the tensors the optimizer was given")
    if [p.data_ptr() for p in params] != pointers:
        _fail(
            name,
            "a parameter's storage was replaced (as 'param.data = ...' does) instead of "
            "updated in place (param.add_(...) under torch.no_grad())",
        )
    if any(not p.is_leaf or p.grad_fn is not None for p in params):
        _fail(name, "a parameter became part of an autograd graph; update under torch.no_grad()")
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, Tensor) and value.requires_grad:
                _fail(name, f"state[{key!r}] requires grad: it is recording an autograd graph")
    if _same(
        problem.values()[:-1], [p.detach() for p in _Problem(device, torch.float64).params], 0, 0
    ):
        _fail(name, f"{steps} steps changed no parameter")
    return None


def _check_none_grads(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    problem = _Problem(device, torch.float64)
    optimizer = factory(problem.all_params)
    before = problem.unused.detach().clone()
    try:
        problem.run(optimizer, steps)
    except Exception as error:
        _fail(
            name,
            f"step() raised {type(error).__name__}: {error} (skip parameters whose .grad is None)",
        )
    if problem.unused.grad is not None:
        _fail(name, "a parameter with no gradient was given one")
    if not torch.equal(problem.unused.detach(), before):
        _fail(name, "a parameter whose .grad is None was changed")
    return None


def _check_reproducible(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    first, second = _Problem(device, torch.float64), _Problem(device, torch.float64)
    first.run(factory(first.all_params), steps)
    second.run(factory(second.all_params), steps)
    if not _same(first.values(), second.values(), 0, 0):
        _fail(
            name,
            "two optimizers built by the same factory, run on the same problem, ended "
            "at different parameters: randomness comes from outside the optimizer "
            "(Python's random module, the global torch generator?); draw from a "
            "torch.Generator seeded through the constructor",
        )
    return None


def _check_lr_from_groups(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    plain, scheduled = _Problem(device, torch.float64), _Problem(device, torch.float64)
    optimizer = factory(plain.all_params)
    other = factory(scheduled.all_params)
    if any("lr" not in group for group in other.param_groups):
        _fail(name, "param_groups have no 'lr' entry, so learning-rate schedulers cannot work")
    # LambdaLR sets every group's lr to a tenth at once, before the first step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(other, lambda epoch: 0.1)
    plain.run(optimizer, steps)
    scheduled.run(other, steps, scheduler)
    if _same(plain.values(), scheduled.values(), 0, 0):
        _fail(
            name,
            "a torch.optim.lr_scheduler scheduler changed param_groups[...]['lr'] but "
            "not the steps: the learning rate is read from somewhere else (an "
            "attribute set in __init__?)",
        )
    return None


def _check_group_options(
    name: str, factory: Factory, device: torch.device, steps: int
) -> str | None:
    """Returns why the check was skipped, or None when it ran."""
    shared, split = _Problem(device, torch.float64), _Problem(device, torch.float64)
    one_group = factory(shared.all_params)
    lr = one_group.param_groups[0]["lr"]
    try:
        two_groups = factory(
            [
                {"params": split.params[:2]},
                {"params": [split.params[2], split.unused], "lr": lr * 0.1},
            ]
        )
    except ValueError as refusal:
        return f"the optimizer accepts a single parameter group ({refusal})"
    shared.run(one_group, steps)
    split.run(two_groups, steps)
    first, second = shared.values(), split.values()
    if not _same(first[:2], second[:2], 0, 0):
        _fail(name, "changing the second group's lr changed the first group's parameters")
    if _same(first[2:3], second[2:3], 0, 0):
        _fail(
            name,
            "the second group's own lr was ignored: options must be read from each "
            "group, not from the optimizer's defaults or attributes",
        )
    return None


def _check_resume(name: str, factory: Factory, device: torch.device, steps: int) -> None:
    uninterrupted = _Problem(device, torch.float64)
    optimizer = factory(uninterrupted.all_params)
    uninterrupted.run(optimizer, steps)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    try:
        saved = torch.load(buffer, weights_only=True)
    except Exception as error:
        _fail(name, f"torch.load(weights_only=True) refused the checkpoint: {error}")

    resumed = _Problem(device, torch.float64)
    with torch.no_grad():
        for p, q in zip(resumed.all_params, uninterrupted.all_params, strict=True):
            p.copy_(q)
    restored = factory(resumed.all_params)
    restored.load_state_dict(saved)
    uninterrupted.run(optimizer, steps)
    resumed.run(restored, steps)
    if not _same(uninterrupted.values(), resumed.values(), 0, 0):
        _fail(
            name,
            "an optimizer rebuilt from a checkpoint did not continue like the "
            "uninterrupted one: keep everything a step depends on (counters, random "
            "generators) in optimizer.state or param_groups, not in attributes",
        )
    _ = copy.deepcopy(restored)  # a checkpoint-able optimizer must also copy
    return None


def _check_dtype_device(
    name: str, factory: Factory, device: torch.device, dtype: torch.dtype, steps: int
) -> None:
    problem = _Problem(device, dtype)
    optimizer = factory(problem.all_params)
    problem.run(optimizer, steps)
    for p in problem.all_params:
        if p.dtype != dtype or p.device.type != device.type:
            _fail(name, f"a {dtype} parameter on {device} became {p.dtype} on {p.device}")
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, Tensor) and value.shape == p.shape and value.ndim > 0:
                if value.dtype != p.dtype or value.device != p.device:
                    _fail(
                        name,
                        f"state[{key!r}] is {value.dtype} on {value.device} for a "
                        f"{p.dtype} parameter on {p.device}",
                    )
    if not all(torch.isfinite(p).all() for p in problem.all_params):
        _fail(name, f"non-finite parameters after {steps} steps in {dtype} on {device}")


def _check_reference(
    name: str,
    factory: Factory,
    reference: Factory,
    device: torch.device,
    steps: int,
    rtol: float,
    atol: float,
) -> None:
    ours, theirs = _Problem(device, torch.float64), _Problem(device, torch.float64)
    ours.run(factory(ours.all_params), steps)
    theirs.run(reference(theirs.all_params), steps)
    for index, (a, b) in enumerate(zip(ours.values(), theirs.values(), strict=True)):
        if not torch.allclose(a, b, rtol=rtol, atol=atol):
            difference = (a - b).abs().max().item()
            _fail(
                name,
                f"parameter {index} differs from the reference by {difference:.3g} "
                f"after {steps} steps (rtol={rtol}, atol={atol})",
            )
