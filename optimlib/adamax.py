r"""Adamax: Adam with the infinity norm in place of the root-mean-square."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._foreach import numbers
from optimlib._functional import (
    addcdiv_scaled_,
    advance,
    bias_correction,
    descent_direction,
    foreach_descent_direction,
    foreach_update_average,
    update_average,
    update_maximum,
)
from optimlib._validation import check_betas, check_common
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, spec, zeros


def adamax_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    beta1, beta2 = betas
    for param, grad, exp_avg, exp_inf, step in zip(
        params, grads, exp_avgs, exp_infs, advance(steps), strict=True
    ):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        update_average(exp_avg, direction, decay=beta1)
        update_maximum(exp_inf.mul_(beta2), direction.abs().add_(eps))
        addcdiv_scaled_(param, exp_avg, exp_inf, -lr / bias_correction(beta1, step))


def adamax_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`adamax_for_loop`, on tensors of one device and dtype."""
    beta1, beta2 = betas
    counts = advance(steps)
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    foreach_update_average(exp_avgs, directions, decay=beta1)
    torch._foreach_mul_(exp_infs, beta2)
    magnitudes = torch._foreach_abs(directions)
    torch._foreach_add_(magnitudes, eps)
    torch._foreach_maximum_(exp_infs, magnitudes)
    step_sizes = [-lr / bias_correction(beta1, t) for t in counts]
    torch._foreach_addcdiv_(params, exp_avgs, exp_infs, numbers(step_sizes))


class Adamax(Optimizer):
    r"""Adamax (Kingma and Ba, 2015, section 7), a drop-in twin of :class:`torch.optim.Adamax`.

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, d_t \\
        u_t &= \max(\beta_2 u_{t-1},\ |d_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

    :math:`u` is an exponentially weighted infinity norm of past gradients; it
    needs no bias correction. State: ``step``, ``exp_avg`` and ``exp_inf``.
    """

    state_spec = spec(exp_avg=zeros(), exp_inf=zeros(), step=counter())
    for_loop_update, foreach_update = adamax_for_loop, adamax_foreach
    supports_capturable = True
    fused_update = compiled_fused(adamax_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        super().__init__(params, defaults_from(locals()))
