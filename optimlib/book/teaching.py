"""Small from-scratch versions of library machinery, written to be read.

Chapter 2 builds :class:`MinimalOptimizer`, the skeleton of
``torch.optim.Optimizer`` (defaults, parameter groups, per-parameter state,
``zero_grad`` and ``state_dict``) in a few dozen lines, and
:class:`MinimalSGD` on top of it. They favour clarity over completeness: no
hooks, no foreach path, no sparse gradients. The tests check that they
behave like ``torch.optim`` where they overlap.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class MinimalOptimizer:
    """The bookkeeping every optimizer needs, and nothing else.

    - ``defaults``: the options given to the constructor;
    - ``param_groups``: a list of dicts, each holding ``"params"`` (a list of
      tensors) and every option, its own value or the default;
    - ``state``: a dict from parameter tensor to a dict of buffers, filled
      lazily by ``step()``.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group; options it does not set are taken from ``defaults``."""
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        already = {id(p) for existing in self.param_groups for p in existing["params"]}
        if any(id(p) in already for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: drop them (the default), or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """State and groups with each tensor replaced by its position (0, 1, ...)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {name: value for name, value in group.items() if name != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: buffers for p, buffers in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and buffers onto this optimizer's own tensors, matched by position."""
        state_dict = copy.deepcopy(state_dict)
        saved_groups = state_dict["param_groups"]
        if [len(g["params"]) for g in saved_groups] != [
            len(g["params"]) for g in self.param_groups
        ]:
            raise ValueError("the saved parameter groups do not match this optimizer's")
        by_index = {
            index: param
            for saved, group in zip(saved_groups, self.param_groups, strict=True)
            for index, param in zip(saved["params"], group["params"], strict=True)
        }
        self.state = defaultdict(dict)
        for index, buffers in state_dict["state"].items():
            param = by_index[index]
            self.state[param] = {
                name: value.to(param.device) if isinstance(value, Tensor) else value
                for name, value in buffers.items()
            }
        self.param_groups = [
            {**saved, "params": group["params"]}
            for saved, group in zip(saved_groups, self.param_groups, strict=True)
        ]

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        raise NotImplementedError


class MinimalSGD(MinimalOptimizer):
    """SGD with (heavy-ball) momentum on top of :class:`MinimalOptimizer`."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["momentum"] != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = direction.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(direction)
                    direction = state["momentum_buffer"]
                p.add_(direction, alpha=-group["lr"])
        return loss


# --------------------------------------------------------------------------
# Deliberately faulty optimizers. Chapter 7 starts from the first one, the
# random-learning-rate SGD that tutorials commonly show, and optimlib's tests
# check that optimlib.testing.check_optimizer catches each fault.


class NaiveRandomLRSGD(torch.optim.Optimizer):
    """The naive random-learning-rate SGD. **Faulty on purpose**: do not use.

    It keeps ``lr`` on ``self`` (schedulers cannot change it), ignores the
    closure, assigns ``param.data`` (replacing storage instead of updating in
    place), crashes on parameters without a gradient and draws its factor from
    Python's global ``random`` (a resumed run cannot redraw the same factors).
    ``factor`` fixes the random number, to reproduce a worked example.
    """

    def __init__(self, params, lr: float = 1e-3, factor: float | None = None):
        self.lr = lr
        self.factor = factor
        super().__init__(params, {})

    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                factor = self.factor if self.factor is not None else random.random()
                param.data = param.data - self.lr * factor * param.grad.data


class DataRebindingSGD(torch.optim.Optimizer):
    """Correct in every way but one: it rebinds ``param.data``. **Faulty on purpose.**"""

    def __init__(self, params, lr: float = 1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.data = param.data - group["lr"] * param.grad
        return loss


class OutsideCounterSGD(torch.optim.Optimizer):
    """SGD with a decaying step whose counter lives on ``self``. **Faulty on purpose.**

    The step size is :math:`\\gamma / (1 + 0.1 t)`, but :math:`t` is an
    attribute, not part of ``optimizer.state``, so ``state_dict`` does not save
    it and a resumed run restarts the decay.
    """

    def __init__(self, params, lr: float = 1e-3):
        super().__init__(params, {"lr": lr})
        self.steps_taken = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decay = 1 + 0.1 * self.steps_taken
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-group["lr"] / decay)
        self.steps_taken += 1
        return loss
