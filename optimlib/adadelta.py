r"""Adadelta: step sizes from the ratio of two running root-mean-squares."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, pick, to_scalar
from optimlib._functional import (
    advance,
    descent_direction,
    foreach_descent_direction,
    foreach_update_square_average,
    new_counter,
    update_square_average,
)
from optimlib._validation import check_common, check_range
from optimlib.optimizer import Optimizer, ParamsT


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
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_range("rho", rho, 0.0, 1.0)
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        states = self.states(
            params,
            lambda p: {
                "step": new_counter(),
                "square_avg": torch.zeros_like(p),
                "acc_delta": torch.zeros_like(p),
            },
        )
        update = adadelta_foreach if foreach else adadelta_for_loop
        update(
            params,
            grads,
            [state["square_avg"] for state in states],
            [state["acc_delta"] for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


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
        delta = acc_delta.add(eps).sqrt_().div_(std).mul_(direction)
        update_square_average(acc_delta, delta, decay=rho)
        param.add_(delta, alpha=-lr)


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
    """The same update as :func:`adadelta_for_loop`, a few kernels per device and dtype."""
    advance(steps)
    for indices in bucket_indices(params):
        bucket_params = pick(params, indices)
        squares, deltas_avg = pick(square_avgs, indices), pick(acc_deltas, indices)
        directions = foreach_descent_direction(
            bucket_params, pick(grads, indices), weight_decay=weight_decay, maximize=maximize
        )
        foreach_update_square_average(squares, directions, decay=rho)
        stds = torch._foreach_add(squares, eps)
        torch._foreach_sqrt_(stds)
        deltas = torch._foreach_add(deltas_avg, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, stds)
        torch._foreach_mul_(deltas, directions)
        foreach_update_square_average(deltas_avg, deltas, decay=rho)
        torch._foreach_add_(bucket_params, deltas, alpha=-lr)
