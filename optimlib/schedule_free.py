r"""Schedule-free AdamW: no learning-rate schedule, an average of the iterates instead.

Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky (2024), "The Road Less
Scheduled", NeurIPS 2024 (arXiv:2405.15682). torch.optim has no twin; the
authors' package, ``schedulefree``, names its class ``AdamWScheduleFree``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
from torch import Tensor

from optimlib import swa_utils
from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    foreach_update_square_average,
    lerp_toward_,
    update_square_average,
)
from optimlib._validation import check_betas, check_common, check_integer, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT, State, UpdateFn, defaults_from, spec, zeros

#: What each parameter group keeps of the schedule (the names the authors' package uses,
#: so that its checkpoints and optimlib's read alike). Python numbers: a float32 tensor
#: would round the running sum of weights.
SCHEDULE_KEYS = ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")


def copy_of_param() -> State:
    """A state entry that starts as a copy of the parameter (:math:`z_1 = x_1`)."""
    return State(lambda param, group: param.detach().clone(memory_format=torch.preserve_format))


def schedule_free_adamw_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    step_size: float,
    average_weight: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    r"""The reference implementation: one update per tensor.

    ``params`` hold :math:`y_t` and become :math:`y_{t+1}`; ``step_size`` is
    :math:`\gamma_t` and ``average_weight`` :math:`c_{t+1}`.
    """
    beta1, beta2 = betas
    for y, grad, z, exp_avg_sq in zip(params, grads, zs, exp_avg_sqs, strict=True):
        update_square_average(exp_avg_sq, grad, decay=beta2)
        direction = grad / exp_avg_sq.sqrt().add_(eps)
        if weight_decay != 0:
            direction.add_(y, alpha=weight_decay)
        lerp_toward_(y, z, average_weight)
        add_scaled_(y, direction, step_size * (beta1 * (1 - average_weight) - 1))
        add_scaled_(z, direction, -step_size)


def schedule_free_adamw_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    zs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    step_size: float,
    average_weight: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """The update of :func:`schedule_free_adamw_for_loop`, on tensors of one device and dtype."""
    beta1, beta2 = betas
    foreach_update_square_average(exp_avg_sqs, grads, decay=beta2)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denominators, eps)
    directions = torch._foreach_div(grads, denominators)
    if weight_decay != 0:
        torch._foreach_add_(directions, params, alpha=weight_decay)
    torch._foreach_lerp_(params, zs, average_weight)
    torch._foreach_add_(params, directions, alpha=step_size * (beta1 * (1 - average_weight) - 1))
    torch._foreach_sub_(zs, directions, alpha=step_size)


class ScheduleFreeAdamW(Optimizer):
    r"""Schedule-free AdamW (Defazio et al., 2024, "The Road Less Scheduled", Algorithm 1).

    Instead of decaying the learning rate on a schedule fixed in advance, the
    method runs a constant-rate AdamW iterate :math:`z`, averages it online
    into :math:`x` (the point to evaluate and to return), and takes gradients
    at an interpolation :math:`y` of the two, which acts as momentum. At step
    :math:`t = 1, 2, \dots`, with :math:`z_1 = x_1` and :math:`v_0 = 0`:

    .. math::

        y_t &= (1 - \beta_1)\, z_t + \beta_1 x_t,
            \qquad g_t = \nabla f(y_t) \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \gamma_t &= \gamma \sqrt{1 - \beta_2^t}\, \min(1, t / T_{\text{warmup}}) \\
        z_{t+1} &= z_t - \gamma_t \frac{g_t}{\sqrt{v_t} + \epsilon}
            - \gamma_t \lambda\, y_t \\
        c_{t+1} &= \frac{w_t}{\sum_{i=1}^t w_i}, \qquad
            w_t = t^r \bigl(\max_{i \le t} \gamma_i\bigr)^p \\
        x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1} z_{t+1}

    The factor :math:`\sqrt{1 - \beta_2^t}` in :math:`\gamma_t` is Adam's bias
    correction of :math:`v`, and :math:`\min(1, t/T_{\text{warmup}})` the
    linear warm-up (``warmup_steps``; none when 0). Weight decay is decoupled
    and taken at :math:`y`. With the defaults ``r=0`` and
    ``weight_lr_power=2`` (:math:`p`) and a constant ``lr``, :math:`\gamma_t`
    never decreases, so :math:`c_{t+1} = \gamma_t^2 / \sum_{i \le t}
    \gamma_i^2`, the weighting of the paper's Algorithm 1: iterates from the
    warm-up, taken with small steps, count little in the average. The maximum
    (as in the authors' code) keeps the weights from falling if a scheduler
    lowers ``lr``.

    This is the paper's algorithm, the one the authors' package calls
    ``AdamWScheduleFreePaper`` (its checkpoints and this class's load into
    each other and continue alike). Their default ``AdamWScheduleFree``
    differs: it divides :math:`v_t` by :math:`1 - \beta_2^t` inside the root
    (so :math:`\epsilon` is not scaled) and leaves that factor out of the
    weights :math:`w_t`.

    **Train and eval modes.** Only :math:`z` and :math:`v` are stored
    (``state["z"]``, ``state["exp_avg_sq"]``, Adam's memory); the parameters
    themselves hold :math:`y` while training, updated in place as

    .. math::

        y_{t+1} = (1 - c_{t+1})\, y_t + c_{t+1} z_t
            + \gamma_t \bigl(\beta_1 (1 - c_{t+1}) - 1\bigr)\, u_t,
        \qquad u_t = \frac{g_t}{\sqrt{v_t} + \epsilon} + \lambda y_t,

    which follows from the three updates above. :meth:`eval` replaces
    :math:`y` by :math:`x = y + (1 - 1/\beta_1)(z - y)` in place, so the model
    evaluates (and is saved) at the average; :meth:`train` puts :math:`y =
    x + (1 - \beta_1)(z - x)` back. A step in eval mode raises, before
    anything changes. Call them next to ``model.train()`` and
    ``model.eval()``::

        optimizer = ScheduleFreeAdamW(model.parameters(), lr=2.5e-3, warmup_steps=1000)
        for epoch in range(epochs):
            model.train(); optimizer.train()
            for inputs, targets in train_loader:
                ...; optimizer.step()
            model.eval(); optimizer.eval()  # the parameters now hold x
            update_bn(itertools.islice(train_loader, 50), model)  # only with BatchNorm
            evaluate(model)

    The optimizer starts in train mode (at the start :math:`x = y = z`). The
    mode is kept in each parameter group (``"train_mode"``), so
    ``state_dict()`` saves it and ``load_state_dict()`` restores it: load
    the model's parameters saved at the same moment, and the run continues
    exactly. Switching is exact up to rounding: a train-eval-train round trip
    changes :math:`y` by about one unit in the last place of :math:`z/\beta_1`,
    hence ``betas[0]`` must be positive.

    **BatchNorm.** Running statistics gathered during training describe the
    activations at :math:`y`, not at :math:`x`; recompute them at :math:`x`
    with :func:`~optimlib.schedule_free.update_bn` before evaluating.

    **Clock.** Each group keeps its step count ``"k"``, the largest
    :math:`\gamma_t` so far ``"lr_max"``, the sum of weights
    ``"weight_sum"`` and the last :math:`\gamma_t` ``"scheduled_lr"`` (for
    logging), as the authors' package does. Every group's clock advances at
    every step, like a learning-rate schedule; a parameter whose first
    gradient comes late starts its :math:`z` (and :math:`v`) then.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\gamma \ge 0`, larger than AdamW's usually
            is (default ``0.0025``).
        betas: :math:`(\beta_1, \beta_2)`: the interpolation weight of
            :math:`x` in :math:`y`, in (0, 1), and the decay of the second
            moment, in [0, 1) (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon`, added to :math:`\sqrt{v_t}` (default ``1e-8``).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        warmup_steps: :math:`T_{\text{warmup}}`, steps of linear warm-up (default 0).
        r: the power of :math:`t` in the weights :math:`w_t` (default 0).
        weight_lr_power: the power :math:`p` of :math:`\gamma` in the weights
            (default 2; 0 weighs the warm-up's iterates like the others).
        foreach: as in :class:`optimlib.Adam` (``None``: foreach on CUDA).
    """

    state_spec = spec(z=copy_of_param(), exp_avg_sq=zeros())
    for_loop_update, foreach_update = schedule_free_adamw_for_loop, schedule_free_adamw_foreach
    # A step advances the groups' clocks before any update, so an overflowed
    # step must be skipped whole, which GradScaler does when the step does not.
    fused_skips_overflowed_steps = False
    fused_update = compiled_fused(
        schedule_free_adamw_for_loop, tensors=("step_size", "average_weight")
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach)
        beta1, _ = check_betas(betas)
        if beta1 == 0:
            raise ValueError(
                f"Invalid beta parameter at index 0: {betas[0]} (must be in (0, 1)): "
                "eval() recovers x from y and z by dividing by beta1"
            )
        check_integer("warmup_steps", warmup_steps)
        check_non_negative("r", r)
        check_non_negative("weight_lr_power", weight_lr_power)
        defaults = defaults_from(locals())
        defaults.update(k=0, train_mode=True, weight_sum=0.0, lr_max=0.0, scheduled_lr=0.0)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ modes

    @property
    def training(self) -> bool:
        """Whether the parameters hold :math:`y` (train mode) rather than :math:`x`."""
        return all(group["train_mode"] for group in self.param_groups)

    @torch.no_grad()
    def train(self) -> None:
        r"""Train mode: the parameters hold :math:`y`, where gradients are taken.

        Does nothing in train mode already.
        """
        for group in self.param_groups:
            if not group["train_mode"]:
                beta1 = float(group["betas"][0])
                self._move_towards_z(group, 1 - beta1)  # y = x + (1 - beta1)(z - x)
                group["train_mode"] = True

    @torch.no_grad()
    def eval(self) -> None:
        r"""Eval mode: the parameters hold the average :math:`x`, to evaluate or save.

        Does nothing in eval mode already. ``step()`` refuses to run until
        :meth:`train` is called.
        """
        for group in self.param_groups:
            if group["train_mode"]:
                beta1 = float(group["betas"][0])
                self._move_towards_z(group, 1 - 1 / beta1)  # x = y + (1 - 1/beta1)(z - y)
                group["train_mode"] = False

    def _move_towards_z(self, group: dict[str, Any], weight: float) -> None:
        for param in group["params"]:
            state = self.state.get(param)
            if state and "z" in state:  # a parameter never stepped has x = y = z
                param.lerp_(state["z"], weight)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, in the mode the optimizer is in, with its clock at zero."""
        if self.param_groups:
            param_group["train_mode"] = self.training
        super().add_param_group(param_group)

    # ------------------------------------------------------------------- step

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step; refused in eval mode, before the closure runs.

        Args:
            closure: optional; re-evaluates the model, calls ``backward()`` and
                returns the loss.
        """
        if not self.training:
            raise RuntimeError(
                "ScheduleFreeAdamW.step() was called in eval mode, where the parameters "
                "hold the average x rather than the point y where gradients are taken; "
                "call optimizer.train() before training (and optimizer.eval() before "
                "evaluating or saving the model)"
            )
        return super().step(closure)

    def step_values(self) -> dict[str, Any]:
        r"""Advance every group's clock: :math:`t`, :math:`\gamma_t` and the weights.

        Runs once per step, after every group has been checked and before any
        is updated, so a refused step leaves the clocks as they were.
        """
        for group in self.param_groups:
            t = group["k"] + 1
            beta2 = float(group["betas"][1])
            warmup = group["warmup_steps"]
            warmup_factor = min(1.0, t / warmup) if warmup > 0 else 1.0
            step_size = float(group["lr"]) * math.sqrt(1 - beta2**t) * warmup_factor
            group["k"] = t
            group["scheduled_lr"] = step_size
            group["lr_max"] = max(group["lr_max"], step_size)
            group["weight_sum"] += _weight(group)
        return {}

    def hyperparameters(self, group: dict[str, Any], update: UpdateFn) -> dict[str, Any]:
        r"""The update's arguments: :math:`\gamma_t`, :math:`c_{t+1}` and the group's options."""
        weight_sum = group["weight_sum"]
        return {
            "step_size": group["scheduled_lr"],
            "average_weight": _weight(group) / weight_sum if weight_sum > 0 else 0.0,
            "betas": (float(group["betas"][0]), float(group["betas"][1])),
            "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]),
        }


def _weight(group: dict[str, Any]) -> float:
    r""":math:`w_t = t^r (\max_{i \le t} \gamma_i)^p` for the group's current :math:`t`."""
    return float(group["k"] ** group["r"] * group["lr_max"] ** group["weight_lr_power"])


def update_bn(
    loader: Iterable[Any],
    model: torch.nn.Module,
    device: torch.device | str | None = None,
    *,
    optimizer: ScheduleFreeAdamW | None = None,
) -> None:
    r"""Recompute the BatchNorm running statistics of ``model`` at :math:`x`.

    Schedule-free training takes gradients, and so gathers BatchNorm
    statistics, at :math:`y`; the model is evaluated at :math:`x`, where the
    activations differ. Defazio et al. (2024) recompute the statistics at
    :math:`x` before evaluating, with a few forward passes in training mode.
    With ``optimizer`` given this first calls ``optimizer.eval()`` (and leaves
    it in eval mode), then :func:`optimlib.swa_utils.update_bn`, which
    averages the batch statistics with equal weights and restores every
    module's training flag and momentum. A few dozen training batches suffice.
    """
    if optimizer is not None:
        optimizer.eval()
    swa_utils.update_bn(loader, model, device)
