r"""NAdam: Adam with Nesterov momentum."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._foreach import numbers
from optimlib._functional import (
    addcdiv_scaled_,
    advance,
    as_number,
    bias_correction,
    foreach_regularized_direction,
    foreach_update_moments,
    overwritable,
    regularized_direction,
    update_moments,
)
from optimlib._validation import check_betas, check_bool, check_common, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, spec, zeros


def momentum_schedule(beta1: float, momentum_decay: float, step: float) -> float:
    r""":math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})`, Dozat's warming momentum."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def _nesterov_coefficients(
    mu_product: Tensor, *, lr: float, beta1: float, momentum_decay: float, step: float
) -> tuple[float, float]:
    """Advance the running product of momenta; return the weights of gradient and momentum.

    The product is kept as a float32 tensor, like ``torch.optim.NAdam``'s, so
    its rounding (and so every digit of the step) matches.
    """
    mu = momentum_schedule(beta1, momentum_decay, step)
    mu_next = momentum_schedule(beta1, momentum_decay, step + 1)
    # A number multiplying a float32 product is rounded to float32 first; a
    # tensor mu (compiled, or capturable) is too, so that every digit agrees.
    mu_product *= mu.to(mu_product.dtype) if isinstance(mu, Tensor) else mu
    product = as_number(mu_product)
    gradient_weight = -lr * (1.0 - mu) / (1.0 - product)
    momentum_weight = (-lr * mu_next) / (1.0 - product * mu_next)
    return gradient_weight, momentum_weight


def nadam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    momentum_decay: float,
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
        gradient_weight, momentum_weight = _nesterov_coefficients(
            mu_products[i], lr=lr, beta1=beta1, momentum_decay=momentum_decay, step=step
        )
        update_moments(exp_avgs[i], exp_avg_sqs[i], direction, beta1=beta1, beta2=beta2)
        denominator = overwritable(exp_avg_sqs[i].div(bias_correction(beta2, step)).sqrt())
        denominator.add_(eps)
        addcdiv_scaled_(param, direction, denominator, gradient_weight)
        addcdiv_scaled_(param, exp_avgs[i], denominator, momentum_weight)


def nadam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`nadam_for_loop`, on tensors of one device and dtype."""
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
    weights = [
        _nesterov_coefficients(product, lr=lr, beta1=beta1, momentum_decay=momentum_decay, step=t)
        for product, t in zip(mu_products, counts, strict=True)
    ]
    foreach_update_moments(exp_avgs, exp_avg_sqs, directions, beta1=beta1, beta2=beta2)
    denominators = torch._foreach_div(exp_avg_sqs, [bias_correction(beta2, t) for t in counts])
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, eps)
    torch._foreach_addcdiv_(params, directions, denominators, numbers([w[0] for w in weights]))
    torch._foreach_addcdiv_(params, exp_avgs, denominators, numbers([w[1] for w in weights]))


class NAdam(Optimizer):
    r"""NAdam (Dozat, 2016), a drop-in twin of :class:`torch.optim.NAdam`.

    With the momentum schedule :math:`\mu_t = \beta_1(1 - \tfrac12 \cdot 0.96^{t\psi})`
    (:math:`\psi` is ``momentum_decay``):

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1}
            \quad \text{(or decoupled decay, as in AdamW)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, d_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, d_t^2 \\
        r_t &= \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1}
            - \gamma \frac{1 - \mu_t}{1 - \prod_{i \le t} \mu_i} \frac{d_t}{r_t}
            - \gamma \frac{\mu_{t+1}}{1 - \prod_{i \le t+1} \mu_i} \frac{m_t}{r_t}

    The step mixes the current gradient and the momentum that will be applied
    next, Nesterov's look-ahead. State: ``step``, ``mu_product`` (the running
    product of :math:`\mu`), ``exp_avg`` and ``exp_avg_sq``.
    """

    state_spec = spec(exp_avg=zeros(), exp_avg_sq=zeros(), mu_product=counter(1.0), step=counter())
    for_loop_update, foreach_update = nadam_for_loop, nadam_foreach
    supports_capturable = True
    fused_update = compiled_fused(nadam_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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
        check_non_negative("momentum_decay", momentum_decay)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        super().__init__(params, defaults_from(locals()))
