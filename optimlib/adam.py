r"""Adam and AdamW: momentum and per-coordinate scaling, with bias correction."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import numbers
from optimlib._functional import (
    addcdiv_scaled_,
    advance,
    bias_correction,
    foreach_regularized_direction,
    foreach_update_moments,
    is_learned,
    regularized_direction,
    update_maximum,
    update_moments,
)
from optimlib._fused import adam_fused
from optimlib._validation import check_betas, check_bool, check_common
from optimlib.optimizer import (
    Optimizer,
    OptionalStates,
    ParamsT,
    counter,
    defaults_from,
    spec,
    zeros,
)


def adam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
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
        second_moment = exp_avg_sqs[i]
        if amsgrad:
            update_maximum(max_exp_avg_sqs[i], exp_avg_sqs[i])
            second_moment = max_exp_avg_sqs[i]
        step_size = lr / bias_correction(beta1, step)
        denominator = (second_moment.sqrt() / bias_correction(beta2, step) ** 0.5).add_(eps)
        if is_learned(step_size):  # differentiable=True with a learned lr or beta1
            param.sub_(exp_avgs[i] / denominator * step_size)
        else:
            addcdiv_scaled_(param, exp_avgs[i], denominator, -step_size)


def adam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`adam_for_loop`, on tensors of one device and dtype."""
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
    second_moments = exp_avg_sqs
    if amsgrad:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        second_moments = max_exp_avg_sqs
    denominators = torch._foreach_sqrt(second_moments)
    torch._foreach_div_(denominators, [bias_correction(beta2, t) ** 0.5 for t in counts])
    torch._foreach_add_(denominators, eps)
    step_sizes = [-lr / bias_correction(beta1, t) for t in counts]
    torch._foreach_addcdiv_(params, exp_avgs, denominators, numbers(step_sizes))


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
    ``fused=True`` runs the same update as torch's fused kernel
    (``optimlib._fused``).
    """

    learnable_hyperparameters = ("lr", "betas", "weight_decay")
    state_spec = spec(
        exp_avg=zeros(), exp_avg_sq=zeros(), max_exp_avg_sq=zeros(when="amsgrad"), step=counter()
    )
    for_loop_update, foreach_update = adam_for_loop, adam_foreach
    supports_capturable = True
    fused_update = adam_fused
    sparse_gradient_error = (
        "Adam does not support sparse gradients, please consider SparseAdam instead"
    )

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
        refuse_tensors = bool(foreach) and not capturable
        if isinstance(lr, Tensor) and refuse_tensors:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        check_common(lr, eps, weight_decay, amsgrad=amsgrad, foreach=foreach, maximize=maximize)
        check_betas(betas)
        check_tensor_betas(betas, refuse_tensors=refuse_tensors)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        super().__init__(params, defaults_from(locals()))


def check_tensor_betas(betas: Any, *, refuse_tensors: bool) -> None:
    """torch.optim.Adam's rules for tensor ``betas``, in its words.

    Both betas must be of one kind, two floats or two tensors; its foreach
    kernels take tensors (as they take a tensor ``lr``) only when capturable.
    """
    if not (all(isinstance(b, float) for b in betas) or all(isinstance(b, Tensor) for b in betas)):
        raise ValueError(
            f"Invalid betas: {betas!r}; betas must be either both floats or both Tensors"
        )
    for index, beta in enumerate(betas):
        if isinstance(beta, Tensor) and refuse_tensors:
            raise ValueError(
                f"betas[{index}] as a Tensor is not supported for capturable=False and foreach=True"
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict comes here too: an Adam checkpoint loaded into AdamW
        # keeps AdamW's decoupled weight decay, as in torch.optim.AdamW.
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
