r"""Adamax: Adam with the infinity norm in place of the root-mean-square."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, numbers, pick, to_scalar
from optimlib._functional import (
    advance,
    bias_correction,
    descent_direction,
    foreach_descent_direction,
    foreach_update_average,
    new_counter,
    update_average,
)
from optimlib._validation import check_betas, check_common
from optimlib.optimizer import Optimizer, ParamsT


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
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        states = self.states(
            params,
            lambda p: {
                "step": new_counter(),
                "exp_avg": torch.zeros_like(p),
                "exp_inf": torch.zeros_like(p),
            },
        )
        beta1, beta2 = group["betas"]
        update = adamax_foreach if foreach else adamax_for_loop
        update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_inf"] for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def adamax_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    for param, grad, exp_avg, exp_inf, step in zip(
        params, grads, exp_avgs, exp_infs, advance(steps), strict=True
    ):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        update_average(exp_avg, direction, decay=beta1)
        torch.maximum(exp_inf.mul_(beta2), direction.abs().add_(eps), out=exp_inf)
        param.addcdiv_(exp_avg, exp_inf, value=-lr / bias_correction(beta1, step))


def adamax_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`adamax_for_loop`, a few kernels per device and dtype."""
    for indices in bucket_indices(params):
        bucket_params = pick(params, indices)
        averages, norms = pick(exp_avgs, indices), pick(exp_infs, indices)
        counts = advance(pick(steps, indices))
        directions = foreach_descent_direction(
            bucket_params, pick(grads, indices), weight_decay=weight_decay, maximize=maximize
        )
        foreach_update_average(averages, directions, decay=beta1)
        torch._foreach_mul_(norms, beta2)
        magnitudes = torch._foreach_abs(directions)
        torch._foreach_add_(magnitudes, eps)
        torch._foreach_maximum_(norms, magnitudes)
        step_sizes = [-lr / bias_correction(beta1, t) for t in counts]
        torch._foreach_addcdiv_(bucket_params, averages, norms, numbers(step_sizes))
