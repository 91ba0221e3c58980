r"""Lion: the sign of an interpolated momentum (Chen et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    decay_weights,
    descent_direction,
    foreach_decay_weights,
    foreach_descent_direction,
    foreach_update_average,
    update_average,
)
from optimlib._validation import check_betas, check_common
from optimlib.optimizer import Optimizer, ParamsT, defaults_from, spec, zeros


def lion_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    beta1, beta2 = betas
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        direction = descent_direction(param, grad, weight_decay=0, maximize=maximize)
        decay_weights(param, lr=lr, weight_decay=weight_decay)
        interpolated = exp_avg.lerp(direction, 1 - beta1)
        add_scaled_(param, interpolated.sign_(), -lr)
        update_average(exp_avg, direction, decay=beta2)


def lion_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`lion_for_loop`, on tensors of one device and dtype."""
    beta1, beta2 = betas
    directions = foreach_descent_direction(params, grads, weight_decay=0, maximize=maximize)
    foreach_decay_weights(params, lr=lr, weight_decay=weight_decay)
    interpolated = torch._foreach_lerp(exp_avgs, directions, 1 - beta1)
    torch._foreach_sign_(interpolated)
    torch._foreach_add_(params, interpolated, alpha=-lr)
    foreach_update_average(exp_avgs, directions, decay=beta2)


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

    state_spec = spec(exp_avg=zeros())
    for_loop_update, foreach_update = lion_for_loop, lion_foreach
    fused_update = compiled_fused(lion_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        super().__init__(params, defaults_from(locals()))
