r"""Adadelta: step sizes from the ratio of two running root-mean-squares."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    advance,
    descent_direction,
    foreach_descent_direction,
    foreach_update_square_average,
    overwritable,
    update_square_average,
)
from optimlib._validation import check_common, check_range
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, spec, zeros


def adadelta_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    advance(steps)
    for param, grad, square_avg, acc_delta in zip(
        params, grads, square_avgs, acc_deltas, strict=True
    ):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        update_square_average(square_avg, direction, decay=rho)
        std = square_avg.add(eps).sqrt_()
        delta = overwritable(acc_delta.add(eps).sqrt_()).div_(std).mul_(direction)
        update_square_average(acc_delta, delta, decay=rho)
        add_scaled_(param, delta, -lr)


def adadelta_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`adadelta_for_loop`, on tensors of one device and dtype."""
    advance(steps)
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    foreach_update_square_average(square_avgs, directions, decay=rho)
    stds = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(stds)
    deltas = list(torch._foreach_add(acc_deltas, eps))
    torch._foreach_sqrt_(deltas)
    torch._foreach_div_(deltas, stds)
    torch._foreach_mul_(deltas, directions)
    foreach_update_square_average(acc_deltas, deltas, decay=rho)
    torch._foreach_add_(params, deltas, alpha=-lr)


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), a drop-in twin of :class:`torch.optim.Adadelta`.

    The step is the gradient scaled by the root-mean-square of recent *updates*
    over the root-mean-square of recent *gradients*, which gives it the units of
    the parameter; ``lr`` only rescales the result (1.0 by default):

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho)\, d_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, d_t \\
        u_t &= \rho u_{t-1} + (1 - \rho)\, \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    State: ``step``, ``square_avg`` (:math:`v`) and ``acc_delta`` (:math:`u`).
    """

    state_spec = spec(square_avg=zeros(), acc_delta=zeros(), step=counter())
    for_loop_update, foreach_update = adadelta_for_loop, adadelta_foreach
    supports_capturable = True
    fused_update = compiled_fused(adadelta_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_range("rho", rho, 0.0, 1.0)
        super().__init__(params, defaults_from(locals()))
