"""``differentiable=True``: gradients flow through a step as they do through torch.optim's.

A differentiable step is a function of the parameters before it, their
gradients, the optimizer's state and any tensor hyperparameter. Its outputs
(the new parameters and state) are compared with torch.optim's, and so are
their derivatives: a vector-Jacobian product with the same random cotangents,
and, for tensor hyperparameters, the gradient of a loss taken after two steps
(the "meta-gradient" of learned learning rates). ``torch.autograd.gradcheck``
then checks optimlib's derivatives against finite differences.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch import Tensor

from tests.library.optimizer_cases import OPTIMIZERS, OptimizerInfo

SIZE = 6


def _has_differentiable(info: OptimizerInfo) -> bool:
    return "differentiable" in inspect.signature(info.theirs).parameters


DIFFERENTIABLE = [info for info in OPTIMIZERS if _has_differentiable(info)]


def _configs() -> list:
    return [
        pytest.param(info, config, id=param.id)
        for info in DIFFERENTIABLE
        for param, config in zip(info.config_params(), info.configs, strict=True)
    ]


def _clone(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in config.items()}


def _inputs(info: OptimizerInfo, config: dict[str, Any]) -> tuple[Tensor, Tensor, dict]:
    """A parameter, its gradient, and a state of the shape torch.optim keeps.

    The state is what torch.optim holds after one ordinary step, with every
    tensor the size of the parameter replaced by values in [0.5, 1) that
    require grad (as torch's own differentiable tests set it) and the step
    count set to 10.
    """
    generator = torch.Generator().manual_seed(0)

    def draw(low: float = -1.0, high: float = 1.0) -> Tensor:
        values = torch.rand(SIZE, generator=generator, dtype=torch.float64)
        return (low + (high - low) * values).requires_grad_()

    param, grad = draw(), draw()
    probe = param.detach().clone().requires_grad_()
    probe.grad = grad.detach().clone()
    reference = info.theirs([probe], **_clone(config))
    reference.step()
    state: dict[str, Any] = {}
    for key, value in reference.state[probe].items():
        if key == "step":
            # float64, as in torch's own tests: torch's differentiable Adam and
            # NAdam compute the bias corrections from this tensor, in its dtype.
            state[key] = torch.tensor(10.0, dtype=torch.float64)
        elif isinstance(value, Tensor) and value.shape == param.shape:
            state[key] = draw(0.5, 1.0)
            if key == "grad_avg":  # centered RMSprop needs square_avg > grad_avg ** 2
                state[key] = (0.1 * state[key]).detach().requires_grad_()
        else:
            state[key] = value.detach().clone() if isinstance(value, Tensor) else value
    return param, grad, state


def _step(cls, config, param: Tensor, grad: Tensor, state: dict, differentiable: bool = True):
    """One step; returns the new parameter and the state that requires grad.

    ``differentiable=False`` gives the values of an ordinary step, detached.
    """
    wanted = [k for k in sorted(state) if isinstance(state[k], Tensor) and state[k].requires_grad]
    if not differentiable:
        param, grad = param.detach(), grad.detach()
        state = {k: v.detach() if isinstance(v, Tensor) else v for k, v in state.items()}
    param = param.clone()
    param.grad = grad
    optimizer = cls([param], **config, differentiable=differentiable)
    optimizer.state[param].update(
        {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
    )
    optimizer.step()
    after = optimizer.state[param]
    return [param] + [after[key] for key in wanted]


def _vjp(outputs: list[Tensor], inputs: list[Tensor], seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
    grads = torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


#: torch's differentiable Adam and NAdam rearrange their arithmetic (the
#: ``capturable`` form), so their derivatives, and torch's values there, agree
#: with an ordinary step only to rounding; optimlib's differentiable step
#: computes exactly what its ordinary step computes.
DERIVATIVE_TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}


@pytest.mark.parametrize(("info", "config"), _configs())
def test_one_step_and_its_derivatives_match_torch(info, config):
    param, grad, state = _inputs(info, config)
    inputs = [
        param,
        grad,
        *(v for v in state.values() if isinstance(v, Tensor) and v.requires_grad),
    ]
    ours = _step(info.ours, _clone(config), param, grad, state)
    theirs = _step(info.theirs, _clone(config), param, grad, state)
    assert len(ours) == len(theirs), "the state that requires grad differs from torch.optim's"
    ordinary = _step(info.theirs, _clone(config), param, grad, state, differentiable=False)
    for mine, reference in zip(ours, ordinary, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-14)
    for mine, reference in zip(_vjp(ours, inputs), _vjp(theirs, inputs), strict=True):
        torch.testing.assert_close(mine, reference, **DERIVATIVE_TOLERANCE)


@pytest.mark.parametrize("info", DIFFERENTIABLE, ids=lambda info: info.name)
def test_derivatives_pass_gradcheck(info):
    config = max(info.configs, key=len)
    param, grad, state = _inputs(info, config)
    names = [k for k, v in state.items() if isinstance(v, Tensor) and v.requires_grad]

    def step(param: Tensor, grad: Tensor, *values: Tensor):
        return tuple(
            _step(
                info.ours,
                _clone(config),
                param,
                grad,
                {**state, **dict(zip(names, values, strict=True))},
            )
        )

    assert torch.autograd.gradcheck(step, (param, grad, *(state[k] for k in names)))


def _hyperparameters(info: OptimizerInfo) -> list:
    """Tensor hyperparameters that require grad, one kind at a time and all together."""
    arguments = inspect.signature(info.theirs).parameters
    kinds: list[dict[str, Any]] = [{"lr": 0.01}]
    if "weight_decay" in arguments:
        kinds.append({"weight_decay": 0.5})
    if "betas" in arguments:
        kinds.append({"betas": (0.8, 0.9)})
    if len(kinds) > 1:
        kinds.append({k: v for kind in kinds for k, v in kind.items()})
    return [
        pytest.param(info, kind, id=f"{info.name}-{'+'.join(kind)}")
        for info in [info]
        for kind in kinds
    ]


def _leaves(values: dict[str, Any], shift: tuple[int, float] | None = None):
    """The hyperparameters as float64 tensors that require grad (``shift``: one moved by h)."""
    leaves: dict[str, Any] = {}
    flat: list[Tensor] = []
    for key, value in values.items():
        numbers = value if isinstance(value, tuple) else (value,)
        tensors = []
        for number in numbers:
            if shift is not None and shift[0] == len(flat):
                number += shift[1]
            tensors.append(torch.tensor(number, dtype=torch.float64, requires_grad=True))
            flat.append(tensors[-1])
        leaves[key] = tuple(tensors) if isinstance(value, tuple) else tensors[0]
    return leaves, flat


def _meta_loss(cls: type, leaves: dict[str, Any], differentiable: bool = True) -> Tensor:
    """Two steps on ``(x * sum(theta) - y)^2``, then the loss, a function of the hyperparameters."""
    generator = torch.Generator().manual_seed(0)
    param = torch.rand(SIZE, generator=generator, dtype=torch.float64).requires_grad_()
    if differentiable:
        param = param.clone()
    else:
        leaves = {
            k: tuple(t.detach() for t in v) if isinstance(v, tuple) else v.detach()
            for k, v in leaves.items()
        }
    optimizer = cls([param], **leaves, differentiable=differentiable)
    x, y = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    for _ in range(2):
        loss = (x * param.sum() - y) ** 2
        loss.backward(inputs=(param,), create_graph=differentiable)
        optimizer.step()
        optimizer.zero_grad()
    return (x * param.sum() - y) ** 2


def _meta_gradients(cls: type, values: dict[str, Any]) -> tuple[Tensor, list[Tensor]]:
    leaves, flat = _leaves(values)
    loss = _meta_loss(cls, leaves)
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    return loss.detach(), [torch.zeros((), dtype=torch.float64) if g is None else g for g in grads]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize(
    ("info", "values"), [p for info in DIFFERENTIABLE for p in _hyperparameters(info)]
)
def test_meta_gradients_through_tensor_hyperparameters(info, values):
    """Where torch.optim differentiates through a hyperparameter, optimlib does too.

    The loss equals an ordinary run's exactly, and its gradient equals a
    central difference of ordinary runs. torch's differentiable Adam computes
    its bias corrections from the float32 step count, so its own loss is off
    its ordinary run's by about 1e-6, and its gradient agrees with optimlib's
    only to about 1e-5.
    """
    try:
        _, theirs = _meta_gradients(info.theirs, values)
    except (RuntimeError, TypeError, ValueError) as refusal:
        pytest.skip(f"torch.optim cannot differentiate this: {refusal}")
    if not all(g.abs() > 0 for g in theirs):
        pytest.skip("torch.optim's step passes no gradient to this hyperparameter")
    loss, ours = _meta_gradients(info.ours, values)
    ordinary = _meta_loss(info.theirs, _leaves(values)[0], differentiable=False)
    torch.testing.assert_close(loss, ordinary.detach(), rtol=1e-12, atol=1e-14)
    h = 1e-6
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        up = _meta_loss(info.ours, _leaves(values, (index, h))[0], differentiable=False)
        down = _meta_loss(info.ours, _leaves(values, (index, -h))[0], differentiable=False)
        torch.testing.assert_close(mine, (up - down).detach() / (2 * h), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("info", DIFFERENTIABLE, ids=lambda info: info.name)
def test_differentiable_step_equals_the_ordinary_one(info):
    """Recording gradients changes nothing in the values (torch's suite runs every test so)."""
    config = max(info.configs, key=len)
    results = []
    for differentiable in (False, True):
        generator = torch.Generator().manual_seed(0)
        leaf = torch.randn(SIZE, generator=generator, dtype=torch.float64, requires_grad=True)
        param = leaf.clone() if differentiable else leaf
        optimizer = info.ours([param], **_clone(config), differentiable=differentiable)
        for _ in range(5):
            param.grad = torch.randn(SIZE, generator=generator, dtype=torch.float64)
            optimizer.step()
        results.append(param.detach())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("info", DIFFERENTIABLE, ids=lambda info: info.name)
def test_foreach_with_differentiable_runs_the_for_loop(info):
    """torch runs foreach SGD here and refuses the others at step time; optimlib runs the loop."""
    results = []
    for cls, foreach, differentiable in (
        (info.ours, True, True),
        (info.ours, False, True),
        (info.theirs, False, False),
    ):
        leaf = torch.linspace(-1, 1, SIZE, dtype=torch.float64, requires_grad=True)
        param = leaf.clone() if differentiable else leaf
        optimizer = cls([param], foreach=foreach, differentiable=differentiable)
        for _ in range(3):
            param.grad = torch.cos(param.detach())
            optimizer.step()
        if differentiable:
            results.append(torch.autograd.grad(param.sum(), leaf)[0])
        results.append(param.detach())
    multi_grad, multi, loop_grad, loop, ordinary = results
    torch.testing.assert_close(multi, ordinary, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(multi, loop, rtol=0, atol=0)
    torch.testing.assert_close(multi_grad, loop_grad, rtol=0, atol=0)


def _snapshot(optimizer) -> list[Tensor]:
    values = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
    for state in optimizer.state.values():
        values += [v.detach().clone() for v in state.values() if isinstance(v, Tensor)]
    return values


def _unchanged(before: list[Tensor], optimizer) -> bool:
    after = _snapshot(optimizer)
    return len(before) == len(after) and all(
        torch.equal(a, b) for a, b in zip(before, after, strict=True)
    )


@pytest.mark.parametrize("info", DIFFERENTIABLE, ids=lambda info: info.name)
def test_a_differentiable_step_that_cannot_run_changes_nothing(info):
    """A leaf parameter (autograd refuses to change it in place), or a hyperparameter
    the update cannot differentiate through, is refused before any group moves."""
    config = _clone(max(info.configs, key=len))
    first = torch.linspace(-1, 1, SIZE, dtype=torch.float64, requires_grad=True).clone()
    leaf = torch.linspace(0, 1, SIZE, dtype=torch.float64, requires_grad=True)
    optimizer = info.ours([{"params": [first]}, {"params": [leaf]}], **config, differentiable=True)
    for param in (first, leaf):
        param.grad = torch.ones(SIZE, dtype=torch.float64)
    before = _snapshot(optimizer)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        optimizer.step()
    assert _unchanged(before, optimizer)

    not_learnable = [
        name
        for name in ("lr", "betas", "momentum", "alpha", "rho", "lr_decay", "lambd", "etas")
        if name in inspect.signature(info.ours).parameters
        and name not in info.ours.learnable_hyperparameters
    ]
    for name in not_learnable:
        optimizer = info.ours([first], **config, differentiable=True)
        value = optimizer.param_groups[0][name]
        optimizer.param_groups[0][name] = (
            tuple(torch.tensor(float(v), requires_grad=True) for v in value)
            if isinstance(value, tuple)
            else torch.tensor(float(value), requires_grad=True)
        )
        before = _snapshot(optimizer)
        with pytest.raises(TypeError, match=rf"cannot differentiate through {name}"):
            optimizer.step()
        assert _unchanged(before, optimizer)


@pytest.mark.parametrize("value", ["False", 2, None])
def test_differentiable_is_a_switch(value):
    with pytest.raises(TypeError, match="Invalid differentiable"):
        DIFFERENTIABLE[0].ours([torch.zeros(2, requires_grad=True)], differentiable=value)


@pytest.mark.parametrize("info", DIFFERENTIABLE, ids=lambda info: info.name)
def test_an_ordinary_step_with_tensors_that_require_grad_is_the_plain_one(info):
    """Outside a differentiable step, a hyperparameter that requires grad is just a number."""
    config = max(info.configs, key=len)
    runs = []
    for requires_grad in (False, True):
        weight = torch.linspace(-1, 1, SIZE, dtype=torch.float64, requires_grad=True)
        options = {
            k: torch.tensor(float(v), dtype=torch.float64, requires_grad=requires_grad)
            if k == "weight_decay" and v
            else v
            for k, v in _clone(config).items()
        }
        optimizer = info.ours([weight], **options)
        for _ in range(5):
            weight.grad = torch.cos(weight.detach())
            optimizer.step()
        runs.append(weight.detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
