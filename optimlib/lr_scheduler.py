r"""Learning-rate schedules, from scratch, as ``torch.optim.lr_scheduler`` subclasses.

Each scheduler computes the learning rate of every parameter group after each
``scheduler.step()``. They subclass ``torch.optim.lr_scheduler.LRScheduler``,
which keeps the bookkeeping (``base_lrs``, ``last_epoch``, ``get_last_lr()``,
the step-order warning); each class here writes the schedule itself in
``get_lr``, with the formula in its docstring. Attribute names follow
``torch.optim.lr_scheduler``, so ``state_dict()`` holds the same entries and
checkpoints load in either library.

Most of PyTorch's schedules are *chainable*: ``get_lr`` updates the current
``group["lr"]`` multiplicatively rather than computing it from scratch, so that
several schedulers can act on one optimizer. optimlib keeps that form, and so
the exact floating-point sequence.

Arguments are taken as ``torch.optim.lr_scheduler`` takes them: numpy integers
and whole floats (``10.0``) for counts of steps, a float ``T_max``, repeated or
unsorted milestones, ``gamma=0``. optimlib refuses only values for which torch
would silently give NaN or a schedule other than the one asked for (a negative
``step_size``, a NaN ``gamma``, a fractional count). A tensor learning rate (or
momentum) in a parameter group is overwritten in place, never replaced, so that
code holding it (a compiled step, for one) sees every change.
"""

from __future__ import annotations

import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any, SupportsFloat

import torch
from torch.optim import Optimizer, lr_scheduler as torch_lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from optimlib._validation import check_range

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]


# ------------------------------------------------------------------- checks


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it equals; anything else unchanged.

    A scheduler's state_dict holds its arguments, and ``torch.load(weights_only=True)``
    refuses numpy scalars, so none are kept.
    """
    if isinstance(value, numbers.Number) and type(value).__module__ == "numpy":
        return value.item()  # type: ignore[attr-defined]
    return value


def _checked(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """``value`` after :func:`check_range` (same arguments), as a plain number."""
    check_range(name, value, low, high, low_inclusive=low_inclusive, high_inclusive=high_inclusive)
    return _plain(value)


def _check_count(name: str, value: Any, minimum: int = 0) -> int:
    """A number of steps, ``>= minimum``, returned as a Python ``int``.

    As in torch, an integer of any kind (numpy's too) or a float with a whole
    value (``10.0``) will do. A fractional count is refused: steps are counted
    in whole numbers, so torch would silently never reach ``2.5``, or round it.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name} value: {value!r} (must be a whole number >= {minimum})")
    check_range(name, value, minimum)
    if isinstance(value, numbers.Integral):
        return int(value)
    if not float(value).is_integer():
        raise ValueError(f"Invalid {name} value: {value!r} (must be a whole number)")
    return int(float(value))


def _current_lrs(optimizer: Optimizer) -> list[Any]:
    """Every group's learning rate; a tensor is copied, so that the list never aliases it."""
    return [
        group["lr"].clone() if isinstance(group["lr"], torch.Tensor) else group["lr"]
        for group in optimizer.param_groups
    ]


def _assign(group: dict[str, Any], key: str, value: Any) -> None:
    """``group[key] = value``, except that a tensor already there is overwritten in place.

    The group keeps the very tensor the user gave it (as torch.optim.lr_scheduler
    does), so whatever holds that tensor, such as a compiled optimizer step, sees
    the new value.
    """
    current = group[key]
    if isinstance(current, torch.Tensor):
        current.fill_(value.reshape(()) if isinstance(value, torch.Tensor) else value)
    else:
        group[key] = value


def _per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """One value per parameter group: a list as given, or a scalar repeated.

    Tensors are copied (a ``base_lr`` that is the group's own ``lr`` tensor must
    not change when the schedule overwrites that tensor) and numpy scalars become
    Python numbers.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(
                f"Invalid {name}: expected {len(optimizer.param_groups)} values "
                f"(one per parameter group), got {len(value)}"
            )
        values = list(value)
    else:
        values = [value] * len(optimizer.param_groups)
    return [v.clone() if isinstance(v, torch.Tensor) else _plain(v) for v in values]


# ------------------------------------------------------------- the schedules


def _check_gamma(gamma: Any) -> Any:
    """A decay factor in [0, inf). 0 (the rate drops to zero) is allowed, as in torch;
    a negative factor would flip the rate's sign, and an infinite one make it inf."""
    return _checked("gamma", gamma, 0.0, math.inf, high_inclusive=False)


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` steps.

    .. math:: \gamma_t = \gamma_0 \cdot \text{gamma}^{\lfloor t / \text{step\_size} \rfloor}
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = _check_count("step_size", step_size, 1)
        self.gamma = _check_gamma(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _current_lrs(self.optimizer)
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        """The formula above, from scratch; torch's base class uses it to jump to a step."""
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at each milestone.

    .. math:: \gamma_t = \gamma_0 \cdot \text{gamma}^{\#\{m \in \text{milestones} : m \le t\}}

    The milestones may come in any order, and one given twice applies ``gamma``
    twice, as in torch (which counts them). A negative milestone is refused:
    the step count never reaches it.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(_check_count("milestones", m) for m in milestones)
        self.gamma = _check_gamma(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch not in self.milestones:
            return _current_lrs(self.optimizer)
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma**passed for base in self.base_lrs]


class _LambdaScheduler(LRScheduler):
    """Shared by LambdaLR and MultiplicativeLR: one function per group, saved when possible.

    A plain function cannot be put in a checkpoint; a callable object's
    attributes can, as in ``torch.optim.lr_scheduler``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        lambdas = _per_group("lr_lambda", optimizer, lr_lambda)
        for function in lambdas:
            if not callable(function):
                raise TypeError(f"Invalid lr_lambda: {type(function).__name__} is not callable")
        self.lr_lambdas: list[Callable[[int], float]] = lambdas
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(function, types.FunctionType) else function.__dict__.copy()
            for function in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        lambdas = state_dict.pop("lr_lambdas")
        self.__dict__.update(state_dict)
        state_dict["lr_lambdas"] = lambdas
        for function, saved in zip(self.lr_lambdas, lambdas, strict=True):
            if saved is not None:
                function.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
    r"""The learning rate is the initial one times a function of the step.

    .. math:: \gamma_t = \gamma_0 \cdot \lambda(t)
    """

    def get_lr(self) -> list[Any]:
        return [
            base * function(self.last_epoch)
            for function, base in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]


class MultiplicativeLR(_LambdaScheduler):
    r"""Each step multiplies the current learning rate by a function of the step.

    .. math:: \gamma_t = \gamma_{t-1} \cdot \lambda(t)
    """

    def get_lr(self) -> list[Any]:
        if self._is_initial:
            return _current_lrs(self.optimizer)
        return [
            group["lr"] * function(self.last_epoch)
            for function, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


class ExponentialLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at every step.

    .. math:: \gamma_t = \gamma_0 \cdot \text{gamma}^t
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = _check_gamma(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial:
            return _current_lrs(self.optimizer)
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Scale the learning rate by ``factor`` for the first ``total_iters`` steps, then restore it.

    .. math:: \gamma_t = \gamma_0 \cdot (\text{factor if } t < \text{total\_iters} \text{ else } 1)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        self.factor = _checked("factor", factor, 0.0, 1.0)
        # With 0, torch scales the rate by factor at step 0 and never undoes it
        self.total_iters = _check_count("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _current_lrs(self.optimizer)
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        done = self.last_epoch >= self.total_iters
        return [base * (self.factor + done * (1 - self.factor)) for base in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Move the factor applied to the learning rate linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps (a linear warm-up, typically).

    .. math:: \gamma_t = \gamma_0 \left(s + (e - s)\frac{\min(t, T)}{T}\right)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        self.start_factor = _checked("start_factor", start_factor, 0.0, 1.0, low_inclusive=False)
        self.end_factor = _checked("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _check_count("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _current_lrs(self.optimizer)
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (
            self.total_iters * self.start_factor + (self.last_epoch - 1) * change
        )
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        progress = min(self.total_iters, self.last_epoch)
        change = self.end_factor - self.start_factor
        return [
            base * (self.start_factor + change * progress / self.total_iters)
            for base in self.base_lrs
        ]


class PolynomialLR(LRScheduler):
    r"""Decay the learning rate polynomially to zero in ``total_iters`` steps.

    .. math:: \gamma_t = \gamma_0 \left(1 - \frac{\min(t, T)}{T}\right)^{\text{power}}
    """

    def __init__(
        self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1
    ) -> None:
        self.total_iters = _check_count("total_iters", total_iters, 1)
        self.power = _checked("power", power, 0.0, math.inf)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial or self.last_epoch > self.total_iters:
            return _current_lrs(self.optimizer)
        ratio = (
            (1.0 - self.last_epoch / self.total_iters)
            / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        progress = min(self.total_iters, self.last_epoch)
        return [base * (1.0 - progress / self.total_iters) ** self.power for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Follow half a cosine from the initial learning rate down to ``eta_min`` in ``T_max`` steps
    (and back up in the next ``T_max``, if training goes on) (Loshchilov and Hutter, 2017).

    .. math::

        \gamma_t = \eta_{\min}
            + \tfrac12(\gamma_0 - \eta_{\min})\left(1 + \cos\frac{\pi t}{T_{\max}}\right)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        # T_max is half the cosine's period, which need not be whole (torch takes 10.0 or 2.5)
        self.T_max = _checked("T_max", T_max, 0.0, math.inf, low_inclusive=False)
        self.eta_min = _checked("eta_min", eta_min, 0.0, math.inf, high_inclusive=False)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        if self._is_initial:
            return _current_lrs(self.optimizer)
        groups = self.optimizer.param_groups
        if self._step_count == 1 and self.last_epoch > 0:  # resumed with an explicit last_epoch
            return [
                self.eta_min
                + (base - self.eta_min) * (1 + math.cos(self.last_epoch * math.pi / self.T_max)) / 2
                for base in self.base_lrs
            ]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:  # the cosine's trough
            return [
                group["lr"] + (base - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base, group in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (
            1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)
        )
        return [ratio * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [
            self.eta_min
            + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base in self.base_lrs
        ]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing restarted every :math:`T_i` steps, with :math:`T_{i+1} = T_i \cdot`
    ``T_mult`` (SGDR, Loshchilov and Hutter, 2017).

    .. math::

        \gamma_t = \eta_{\min}
            + \tfrac12(\gamma_0 - \eta_{\min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.T_0 = _check_count("T_0", T_0, 1)
        self.T_i: float = self.T_0
        self.T_mult = _check_count("T_mult", T_mult, 1)
        self.eta_min = _checked("eta_min", eta_min, 0.0, math.inf, high_inclusive=False)
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        return [
            self.eta_min
            + (base - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
            for base in self.base_lrs
        ]

    def step(self, epoch: float | None = None) -> None:
        """Advance one step, or jump to ``epoch`` (which may be fractional)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur %= self.T_i
                self.T_i *= self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Invalid epoch: {epoch} (must be >= 0)")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True  # the flag torch's base class keeps
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            _assign(group, "lr", lr)
        self._get_lr_called_within_step = False
        self._last_lr = _current_lrs(self.optimizer)


def _set_momentum(group: dict[str, Any], value: float, use_beta1: bool) -> None:
    """Write a cyclic schedule's momentum: SGD's ``momentum`` or Adam's ``betas[0]``.

    A tensor there is overwritten in place, like a tensor lr (torch would put a
    float in its stead; the value is the same).
    """
    if not use_beta1:
        _assign(group, "momentum", value)
    elif isinstance(group["betas"][0], torch.Tensor):
        group["betas"][0].fill_(value)
    else:
        group["betas"] = (value, *group["betas"][1:])


def _momentum_key(optimizer: Optimizer) -> bool:
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(
            "Invalid cycle_momentum=True: the optimizer has neither momentum nor "
            "betas; pass cycle_momentum=False"
        )
    return "betas" in optimizer.defaults


class CyclicLR(LRScheduler):
    r"""Cycle the learning rate between ``base_lr`` and ``max_lr`` (Smith, 2017).

    Each cycle rises for ``step_size_up`` steps and falls for ``step_size_down``;
    ``mode`` scales the amplitude: constant (``"triangular"``), halved every cycle
    (``"triangular2"``) or multiplied by ``gamma`` every step (``"exp_range"``). With
    ``cycle_momentum`` the momentum cycles the opposite way, between
    ``max_momentum`` and ``base_momentum``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                _assign(group, "lr", lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        # Half-cycles need not be whole numbers of steps. The rise must take some
        # time (0 would divide by zero); the fall may be instant (a sawtooth).
        check_range(
            "step_size_up", step_size_up, 0.0, math.inf, low_inclusive=False, high_inclusive=False
        )
        up = float(step_size_up)
        down = up
        if step_size_down is not None:
            check_range("step_size_down", step_size_down, 0.0, math.inf, high_inclusive=False)
            down = float(step_size_down)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(
                f"Invalid mode: {mode!r} (must be 'triangular', 'triangular2' or "
                "'exp_range', unless scale_fn is given)"
            )
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(
                f"Invalid scale_mode: {scale_mode!r} (must be 'cycle' or 'iterations')"
            )
        if mode == "exp_range" and scale_fn is None:
            # the amplitude is gamma**step: NaN or negative gamma gives NaN or flipping lrs
            gamma = _checked("gamma", gamma, 0.0, math.inf, high_inclusive=False)
        self.mode = mode
        self.gamma = _plain(gamma)
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            self.base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for top, bottom, group in zip(
                    self.max_momentums, self.base_momentums, optimizer.param_groups, strict=True
                ):
                    _set_momentum(group, top, self.use_beta1)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self.scale_mode = "cycle"
        else:
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The amplitude factor at cycle (or step) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def get_lr(self) -> list[Any]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            height = x / self.step_ratio
        else:
            height = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [
            base + (top - base) * height * scale
            for base, top in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for group, bottom, top in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                _set_momentum(group, top - (top - bottom) * height * scale, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "optimizer"}
        custom = state.pop("_scale_fn_custom")
        # A function cannot be saved; a callable object's attributes can.
        state["_scale_fn_custom"] = (
            custom.__dict__.copy()
            if custom is not None and not isinstance(custom, types.FunctionType)
            else None
        )
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.pop("_scale_fn_custom", None)
        custom = self._scale_fn_custom
        self.__dict__.update(state_dict)
        self._scale_fn_custom = custom
        if saved is not None and custom is not None:
            custom.__dict__.update(saved)
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    r"""The one-cycle policy (Smith and Topin, 2019): warm up from ``max_lr / div_factor``
    to ``max_lr`` during the first ``pct_start`` of ``total_steps``, then anneal to
    ``max_lr / (div_factor * final_div_factor)``; momentum moves the opposite way.

    Stepping more than ``total_steps`` times raises a ``ValueError``. With
    ``three_phase=True`` the warm-up is mirrored before the final annealing.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        if total_steps is not None:
            self.total_steps = _check_count("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _check_count("epochs", epochs, 1) * _check_count(
                "steps_per_epoch", steps_per_epoch, 1
            )
        else:
            raise ValueError(
                "Invalid arguments: give total_steps, or both epochs and steps_per_epoch"
            )
        if not isinstance(pct_start, float):
            raise ValueError(f"Invalid pct_start: {pct_start!r} (must be a float in [0, 1])")
        pct_start = _checked("pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"Invalid anneal_strategy: {anneal_strategy!r} (must be 'cos' or 'linear')"
            )
        check_range("div_factor", div_factor, 0.0, math.inf, low_inclusive=False)
        check_range("final_div_factor", final_div_factor, 0.0, math.inf, low_inclusive=False)
        warm_end = float(pct_start * self.total_steps) - 1
        phases = [("initial_lr", "max_lr", "max_momentum", "base_momentum", warm_end)]
        if three_phase:
            phases.append(
                (
                    "max_lr",
                    "initial_lr",
                    "base_momentum",
                    "max_momentum",
                    float(2 * pct_start * self.total_steps) - 2,
                )
            )
            phases.append(
                ("initial_lr", "min_lr", "max_momentum", "max_momentum", self.total_steps - 1)
            )
        else:
            phases.append(
                ("max_lr", "min_lr", "base_momentum", "max_momentum", self.total_steps - 1)
            )
        self._schedule_phases: list[dict[str, Any]] = [
            {
                "end_step": end,
                "start_lr": lr0,
                "end_lr": lr1,
                "start_momentum": m0,
                "end_momentum": m1,
            }
            for lr0, lr1, m0, m1, end in phases
        ]
        self._anneal_func_type = anneal_strategy
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for top, group in zip(max_lrs, optimizer.param_groups, strict=True):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            tops = _per_group("max_momentum", optimizer, max_momentum)
            bottoms = _per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for top, bottom, group in zip(tops, bottoms, optimizer.param_groups, strict=True):
                    _set_momentum(group, top, self.use_beta1)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, fraction: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def get_lr(self) -> list[Any]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR was stepped {step} times, more than its total_steps "
                f"({self.total_steps}); build it with a larger total_steps"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for index, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if step <= end or index == len(self._schedule_phases) - 1:
                    fraction = (step - start) / (end - start)
                    lrs.append(
                        self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], fraction)
                    )
                    if self.cycle_momentum:
                        momentum = self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], fraction
                        )
                        _set_momentum(group, momentum, self.use_beta1)
                    break
                start = phase["end_step"]
        return lrs


class _Composite(LRScheduler):
    """Shared by SequentialLR and ChainedScheduler: checks and saves the schedulers they hold."""

    _schedulers: Sequence[LRScheduler]

    def _check_schedulers(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer) -> None:
        name = type(self).__name__
        if not schedulers:
            raise ValueError(f"Invalid schedulers: {name} needs at least one scheduler")
        for index, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(f"Invalid schedulers: element {index} has no optimizer")
            if isinstance(scheduler, (ReduceLROnPlateau, torch_lr_scheduler.ReduceLROnPlateau)):
                raise ValueError(
                    f"Invalid schedulers: element {index} is a ReduceLROnPlateau, "
                    f"whose step needs a metric; {name} cannot drive it"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"Invalid schedulers: element {index} belongs to another optimizer"
                )

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.pop("_schedulers")
        self.__dict__.update(state_dict)
        state_dict["_schedulers"] = saved
        for scheduler, state in zip(self._schedulers, saved, strict=True):
            scheduler.load_state_dict(state)


class SequentialLR(_Composite):
    """Run ``schedulers`` one after the other, switching at each of ``milestones``
    (for example a :class:`LinearLR` warm-up followed by :class:`CosineAnnealingLR`).
    Each scheduler starts from its own step 0 when its turn comes."""

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        self._check_schedulers(schedulers, optimizer)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"Invalid milestones: {len(schedulers)} schedulers need "
                f"{len(schedulers) - 1} milestones, got {len(milestones)}"
            )
        milestones = [_check_count("milestones", milestone) for milestone in milestones]
        # Unsorted milestones would hand over to the wrong scheduler; a repeated one
        # gives the scheduler between the two no steps, as in torch.
        if any(b < a for a, b in pairwise(milestones)):
            raise ValueError(f"Invalid milestones: {milestones} (must be non-decreasing)")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # The schedulers each took their initial step on construction; undo those and
        # let only the first one act.
        for group in optimizer.param_groups:
            _assign(group, "lr", group["initial_lr"])
        self._rewind(self)
        first = bisect_right(milestones, 0)
        schedulers[first]._initial_step()
        self._last_lr = schedulers[first].get_last_lr()

    def _rewind(self, scheduler: Any) -> None:
        if hasattr(scheduler, "_schedulers"):
            for inner in scheduler._schedulers:
                self._rewind(inner)
        elif hasattr(scheduler, "last_epoch"):
            scheduler.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]  # takes no epoch, as torch's
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # the new scheduler's own step 0
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    """Step several schedulers together, each multiplying in its own factor
    (chainable schedules compose: ``ExponentialLR`` times a ``ConstantLR`` warm-up)."""

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None
    ) -> None:
        if optimizer is None and schedulers:
            optimizer = schedulers[0].optimizer
        if optimizer is None:
            raise ValueError("Invalid schedulers: ChainedScheduler needs at least one scheduler")
        self._check_schedulers(schedulers, optimizer)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _current_lrs(schedulers[-1].optimizer)

    def step(self) -> None:  # type: ignore[override]  # takes no epoch, as torch's
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _current_lrs(self._schedulers[-1].optimizer)


class ReduceLROnPlateau(LRScheduler):
    r"""Divide the learning rate by ``1 / factor`` when a metric stops improving.

    ``step(metric)`` after each evaluation. An epoch is an improvement when the
    metric beats the best so far by more than ``threshold`` (relative or
    absolute, ``threshold_mode``), in direction ``mode`` ("min" or "max"). After
    more than ``patience`` epochs without one, every group's learning rate is
    multiplied by ``factor`` (not below ``min_lr``, and only if it changes by more
    than ``eps``), then ``cooldown`` epochs pass before counting again.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        self.factor = _checked("factor", factor, 0.0, 1.0, high_inclusive=False)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group("min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = _plain(min_lr)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _check_count("patience", patience)
        self.cooldown = _check_count("cooldown", cooldown)
        self.eps = _checked("eps", eps, 0.0, math.inf)
        threshold = _checked("threshold", threshold, 0.0, math.inf)
        self.last_epoch = 0
        self._last_lr = _current_lrs(optimizer)
        self._set_comparison(mode, threshold, threshold_mode)
        self._reset()

    def _set_comparison(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (must be 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"Invalid threshold_mode: {threshold_mode!r} (must be 'rel' or 'abs')")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def is_better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return value < best * (1.0 - self.threshold)
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Count one evaluation of ``metrics``; ``epoch`` (deprecated, as in torch) sets
        the epoch counter instead of adding one to it."""
        current = float(metrics)
        if epoch is None:
            self.last_epoch += 1
        else:
            warnings.warn(
                "The epoch argument of ReduceLROnPlateau.step() is deprecated, as in "
                "torch.optim.lr_scheduler; call step(metrics)",
                UserWarning,
                stacklevel=2,
            )
            self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _current_lrs(self.optimizer)

    def _reduce_lr(self) -> None:
        if len(self.min_lrs) != len(self.optimizer.param_groups):
            if self.default_min_lr is None:
                raise RuntimeError(
                    "ReduceLROnPlateau: the optimizer gained parameter groups "
                    "since min_lr was given per group; extend min_lrs to match"
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                _assign(group, "lr", new)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._set_comparison(self.mode, self.threshold, self.threshold_mode)


def learning_rates(
    make_scheduler: Callable[[Optimizer], Any], steps: int, lr: float = 0.1
) -> list[float]:
    """The learning rate a schedule gives at steps 0, 1, ..., ``steps``.

    ``make_scheduler(optimizer)`` builds the scheduler around a throwaway SGD
    optimizer (one parameter, learning rate ``lr``, momentum 0.9, so that cyclic
    schedules can drive momentum too). Handy for plotting a schedule before
    training with it.
    """
    import torch

    from optimlib.sgd import SGD

    optimizer = SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    values = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        values.append(optimizer.param_groups[0]["lr"])
    return [float(value) for value in values]
