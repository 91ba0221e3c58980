r"""Adam and AdamW: momentum and per-coordinate scaling, with bias correction."""

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
from optimlib._validation import check_betas, check_bool, check_common
from optimlib.optimizer import Optimizer, ParamsT


class Adam(Optimizer):
    r"""Adam (Kingma and Ba, 2015), a drop-in twin of :class:`torch.optim.Adam`.

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1}
            \quad \text{(L2; with } \texttt{decoupled\_weight\_decay}
            \text{, instead } \theta_{t-1} \leftarrow (1 - \gamma\lambda)\theta_{t-1}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, d_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, d_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t)
            \quad \text{(AMSGrad, Reddi et al. 2018; else } \hat v_t = v_t) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t / (1 - \beta_2^t)} + \epsilon}

    The factors :math:`1 - \beta^t` undo the bias of averages that start at
    zero. State: ``step``, ``exp_avg`` (:math:`m`), ``exp_avg_sq``
    (:math:`v`) and, with ``amsgrad``, ``max_exp_avg_sq`` (:math:`\hat v`).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_common(lr, eps, weight_decay, amsgrad=amsgrad, foreach=foreach, maximize=maximize)
        check_betas(betas)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        def initial(param: Tensor) -> dict[str, Tensor]:
            state = {
                "step": new_counter(),
                "exp_avg": torch.zeros_like(param),
                "exp_avg_sq": torch.zeros_like(param),
            }
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
            return state

        states = self.states(params, initial)
        update = adam_foreach if foreach else adam_for_loop
        beta1, beta2 = (to_scalar(beta) for beta in group["betas"])
        update(
            params,
            grads,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state.get("max_exp_avg_sq") for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group.get("decoupled_weight_decay", False),
            amsgrad=group["amsgrad"],
            maximize=group["maximize"],
        )


class AdamW(Adam):
    r"""AdamW (Loshchilov and Hutter, 2019), a drop-in twin of :class:`torch.optim.AdamW`.

    Adam with *decoupled* weight decay: instead of adding
    :math:`\lambda\theta` to the gradient, where Adam's scaling would shrink
    it for coordinates with large gradients, the weights are multiplied by
    :math:`1 - \gamma\lambda` before the Adam step. Default
    ``weight_decay=1e-2``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )


def adam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
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
        second_moment = exp_avg_sqs[i]
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sqs[i], out=max_exp_avg_sqs[i])
            second_moment = max_exp_avg_sqs[i]
        step_size = lr / bias_correction(beta1, step)
        denominator = (second_moment.sqrt() / bias_correction(beta2, step) ** 0.5).add_(eps)
        param.addcdiv_(exp_avgs[i], denominator, value=-step_size)


def adam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor | None],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`adam_for_loop`, a few kernels per device and dtype."""
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
        if amsgrad:
            maxima = pick(max_exp_avg_sqs, indices)
            torch._foreach_maximum_(maxima, squares)
            squares = maxima
        denominators = torch._foreach_sqrt(squares)
        torch._foreach_div_(denominators, [bias_correction(beta2, t) ** 0.5 for t in counts])
        torch._foreach_add_(denominators, eps)
        step_sizes = [-lr / bias_correction(beta1, t) for t in counts]
        torch._foreach_addcdiv_(bucket_params, averages, denominators, numbers(step_sizes))
