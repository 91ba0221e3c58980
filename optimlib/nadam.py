r"""NAdam: Adam with Nesterov momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, numbers, pick, to_scalar
from optimlib._functional import (
    advance,
    bias_correction,
    foreach_regularized_direction,
    foreach_update_moments,
    new_counter,
    regularized_direction,
    update_moments,
)
from optimlib._validation import check_betas, check_bool, check_common, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT


def momentum_schedule(beta1: float, momentum_decay: float, step: float) -> float:
    r""":math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})`, Dozat's warming momentum."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


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

    scalar_state_keys = ("mu_product",)

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
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_betas(betas)
        check_non_negative("momentum_decay", momentum_decay)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
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
                "mu_product": new_counter(1.0),
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            },
        )
        beta1, beta2 = group["betas"]
        update = nadam_foreach if foreach else nadam_for_loop
        update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state["mu_product"] for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )


def _nesterov_coefficients(
    mu_product: Tensor, *, lr: float, beta1: float, momentum_decay: float, step: float
) -> tuple[float, float]:
    """Advance the running product of momenta; return the weights of gradient and momentum.

    The product is kept as a float32 tensor, like ``torch.optim.NAdam``'s, so
    its rounding (and so every digit of the step) matches.
    """
    mu = momentum_schedule(beta1, momentum_decay, step)
    mu_next = momentum_schedule(beta1, momentum_decay, step + 1)
    mu_product *= mu
    product = mu_product.item()
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
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
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
        gradient_weight, momentum_weight = _nesterov_coefficients(
            mu_products[i], lr=lr, beta1=beta1, momentum_decay=momentum_decay, step=step
        )
        update_moments(exp_avgs[i], exp_avg_sqs[i], direction, beta1=beta1, beta2=beta2)
        denominator = exp_avg_sqs[i].div(bias_correction(beta2, step)).sqrt().add_(eps)
        param.addcdiv_(direction, denominator, value=gradient_weight)
        param.addcdiv_(exp_avgs[i], denominator, value=momentum_weight)


def nadam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`nadam_for_loop`, a few kernels per device and dtype."""
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
        weights = [
            _nesterov_coefficients(
                product, lr=lr, beta1=beta1, momentum_decay=momentum_decay, step=t
            )
            for product, t in zip(pick(mu_products, indices), counts, strict=True)
        ]
        foreach_update_moments(averages, squares, directions, beta1=beta1, beta2=beta2)
        denominators = torch._foreach_div(squares, [bias_correction(beta2, t) for t in counts])
        torch._foreach_sqrt_(denominators)
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(
            bucket_params, directions, denominators, numbers([w[0] for w in weights])
        )
        torch._foreach_addcdiv_(
            bucket_params, averages, denominators, numbers([w[1] for w in weights])
        )
