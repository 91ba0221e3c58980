r"""Lion: the sign of an interpolated momentum (Chen et al., 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, pick, to_scalar
from optimlib._functional import (
    decay_weights,
    descent_direction,
    foreach_decay_weights,
    foreach_descent_direction,
    foreach_update_average,
    update_average,
)
from optimlib._validation import check_betas, check_common
from optimlib.optimizer import Optimizer, ParamsT


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum", found by program search (Chen et al., 2023).

    .. math::

        c_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        \theta_t &= (1 - \gamma\lambda)\, \theta_{t-1} - \gamma\, \operatorname{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2)\, g_t

    Every coordinate moves by exactly :math:`\pm\gamma` (or not at all), so
    the update has the same size as SGD's sign step whatever the gradient's
    scale; the paper recommends a learning rate 3 to 10 times smaller than
    AdamW's and a correspondingly larger decoupled weight decay
    :math:`\lambda`. It keeps one buffer, ``exp_avg`` (:math:`m`), half of
    Adam's memory. Defaults: ``lr=1e-4``, ``betas=(0.9, 0.99)``,
    ``weight_decay=0``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_common(lr, weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        states = self.states(params, lambda p: {"exp_avg": torch.zeros_like(p)})
        beta1, beta2 = group["betas"]
        update = lion_foreach if foreach else lion_for_loop
        update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            lr=to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def lion_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        direction = descent_direction(param, grad, weight_decay=0, maximize=maximize)
        decay_weights(param, lr=lr, weight_decay=weight_decay)
        interpolated = exp_avg.lerp(direction, 1 - beta1)
        param.add_(interpolated.sign_(), alpha=-lr)
        update_average(exp_avg, direction, decay=beta2)


def lion_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`lion_for_loop`, a few kernels per device and dtype."""
    for indices in bucket_indices(params):
        bucket_params, averages = pick(params, indices), pick(exp_avgs, indices)
        directions = foreach_descent_direction(
            bucket_params, pick(grads, indices), weight_decay=0, maximize=maximize
        )
        foreach_decay_weights(bucket_params, lr=lr, weight_decay=weight_decay)
        interpolated = torch._foreach_lerp(averages, directions, 1 - beta1)
        torch._foreach_sign_(interpolated)
        torch._foreach_add_(bucket_params, interpolated, alpha=-lr)
        foreach_update_average(averages, directions, decay=beta2)
