r"""RAdam: Adam with its early, high-variance steps rectified."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, pick, to_scalar
from optimlib._functional import (
    advance,
    bias_correction,
    foreach_regularized_direction,
    foreach_update_moments,
    new_counter,
    regularized_direction,
    update_moments,
)
from optimlib._validation import check_betas, check_bool, check_common
from optimlib.optimizer import Optimizer, ParamsT


def rectification(beta2: float, step: float) -> float | None:
    r"""Liu et al.'s variance rectification :math:`r_t`, or ``None`` while :math:`\rho_t \le 5`.

    :math:`\rho_\infty = 2/(1 - \beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t / (1 - \beta_2^t)` estimate the
    degrees of freedom of the second-moment average; with few of them the
    adaptive scaling is too noisy to trust, and RAdam takes a plain momentum
    step instead.
    """
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction(beta2, step)
    if rho_t <= 5.0:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


class RAdam(Optimizer):
    r"""RAdam (Liu et al., 2020), a drop-in twin of :class:`torch.optim.RAdam`.

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1}
            \quad \text{(or decoupled decay, as in AdamW)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, d_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, d_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \frac{m_t}{1 - \beta_1^t} \times
            \begin{cases}
              r_t \dfrac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
              1 & \text{otherwise}
            \end{cases}

    with :math:`r_t` and :math:`\rho_t` from :func:`optimlib.radam.rectification`: an
    automatic warm-up. State: ``step``, ``exp_avg`` and ``exp_avg_sq``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
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
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            },
        )
        beta1, beta2 = group["betas"]
        update = radam_foreach if foreach else radam_for_loop
        update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )


def radam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    for i, (param, grad, step) in enumerate(zip(params, grads, advance(steps), strict=True)):
        direction = regularized_direction(
            param,
            grad,
            lr=lr,
            weight_decay=weight_decay,
            decoupled=decoupled_weight_decay,
            maximize=maximize,
        )
        update_moments(exp_avgs[i], exp_avg_sqs[i], direction, beta1=beta1, beta2=beta2)
        update = exp_avgs[i] / bias_correction(beta1, step)
        rectifier = rectification(beta2, step)
        if rectifier is None:
            param.add_(update * lr, alpha=-1.0)
        else:
            adaptive = bias_correction(beta2, step) ** 0.5 / exp_avg_sqs[i].sqrt().add_(eps)
            param.add_(update * lr * adaptive * rectifier, alpha=-1.0)


def radam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`radam_for_loop`, a few kernels per device and dtype."""
    for indices in bucket_indices(params):
        bucket_params = pick(params, indices)
        averages, squares = pick(exp_avgs, indices), pick(exp_avg_sqs, indices)
        counts = advance(pick(steps, indices))
        directions = foreach_regularized_direction(
            bucket_params,
            pick(grads, indices),
            lr=lr,
            weight_decay=weight_decay,
            decoupled=decoupled_weight_decay,
            maximize=maximize,
        )
        foreach_update_moments(averages, squares, directions, beta1=beta1, beta2=beta2)
        # All tensors of a bucket usually share a step count, but a parameter that
        # joined later or missed steps may not: rectify each one on its own count.
        updates = torch._foreach_div(averages, [bias_correction(beta1, t) for t in counts])
        torch._foreach_mul_(updates, float(lr))
        rectified = [k for k, t in enumerate(counts) if rectification(beta2, t) is not None]
        if rectified:
            adaptive = torch._foreach_sqrt([squares[k] for k in rectified])
            torch._foreach_add_(adaptive, eps)
            torch._foreach_reciprocal_(adaptive)
            torch._foreach_mul_(
                adaptive, [bias_correction(beta2, counts[k]) ** 0.5 for k in rectified]
            )
            scaled = [updates[k] for k in rectified]
            torch._foreach_mul_(scaled, adaptive)
            torch._foreach_mul_(scaled, [rectification(beta2, counts[k]) for k in rectified])
        torch._foreach_add_(bucket_params, updates, alpha=-1.0)
