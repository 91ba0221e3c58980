r"""RAdam: Adam with its early, high-variance steps rectified."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    advance,
    bias_correction,
    computed_once,
    foreach_regularized_direction,
    foreach_update_moments,
    overwritable,
    regularized_direction,
    update_moments,
)
from optimlib._validation import check_betas, check_bool, check_common
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, spec, zeros


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
    if isinstance(rho_t, Tensor):  # compiled (fused=True): r_t = 0 stands for None
        ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        rectifier = torch.where(rho_t > 5.0, ratio.clamp(min=0).sqrt(), 0.0)
        return computed_once(rectifier)  # type: ignore[return-value]
    if rho_t <= 5.0:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


def radam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    beta1, beta2 = betas
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
            adaptive = bias_correction(beta2, step) ** 0.5 / overwritable(
                exp_avg_sqs[i].sqrt()
            ).add_(eps)
            if isinstance(rectifier, Tensor):  # compiled: no branch on the count
                rectified = torch.where(rectifier > 0, adaptive * rectifier, 1.0)
                param.add_(update * lr * rectified, alpha=-1.0)
            else:
                param.add_(update * lr * adaptive * rectifier, alpha=-1.0)


def radam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`radam_for_loop`, on tensors of one device and dtype."""
    beta1, beta2 = betas
    counts = advance(steps)
    directions = foreach_regularized_direction(
        params,
        grads,
        lr=lr,
        weight_decay=weight_decay,
        decoupled=decoupled_weight_decay,
        maximize=maximize,
    )
    foreach_update_moments(exp_avgs, exp_avg_sqs, directions, beta1=beta1, beta2=beta2)
    # All tensors of a bucket usually share a step count, but a parameter that
    # joined later or missed steps may not: rectify each one on its own count.
    updates = torch._foreach_div(exp_avgs, [bias_correction(beta1, t) for t in counts])
    torch._foreach_mul_(updates, float(lr))
    rectifiers = {k: r for k, t in enumerate(counts) if (r := rectification(beta2, t)) is not None}
    if rectifiers:
        adaptive = torch._foreach_sqrt([exp_avg_sqs[k] for k in rectifiers])
        torch._foreach_add_(adaptive, eps)
        torch._foreach_reciprocal_(adaptive)
        torch._foreach_mul_(
            adaptive, [bias_correction(beta2, counts[k]) ** 0.5 for k in rectifiers]
        )
        scaled = [updates[k] for k in rectifiers]
        torch._foreach_mul_(scaled, adaptive)
        torch._foreach_mul_(scaled, list(rectifiers.values()))
    torch._foreach_add_(params, updates, alpha=-1.0)


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

    learnable_hyperparameters = ("lr", "weight_decay")
    state_spec = spec(exp_avg=zeros(), exp_avg_sq=zeros(), step=counter())
    for_loop_update, foreach_update = radam_for_loop, radam_foreach
    supports_capturable = True
    fused_update = compiled_fused(radam_for_loop)

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
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        super().__init__(params, defaults_from(locals()))
