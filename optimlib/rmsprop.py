r"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    addcdiv_scaled_,
    advance,
    descent_direction,
    foreach_descent_direction,
    foreach_update_average,
    foreach_update_square_average,
    overwritable,
    update_average,
    update_square_average,
)
from optimlib._validation import check_common, check_non_negative
from optimlib.optimizer import (
    Optimizer,
    OptionalStates,
    ParamsT,
    counter,
    defaults_from,
    spec,
    zeros,
)


def rmsprop_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: OptionalStates,
    momentum_buffers: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    advance(steps)
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        update_square_average(square_avgs[i], direction, decay=alpha)
        if centered:
            update_average(grad_avgs[i], direction, decay=alpha)
            rms = square_avgs[i].addcmul(grad_avgs[i], grad_avgs[i], value=-1).sqrt_()
        else:
            rms = square_avgs[i].sqrt()
        rms = overwritable(rms).add_(eps)
        if momentum > 0:
            momentum_buffers[i].mul_(momentum).addcdiv_(direction, rms)
            add_scaled_(param, momentum_buffers[i], -lr)
        else:
            addcdiv_scaled_(param, direction, rms, -lr)


def rmsprop_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: OptionalStates,
    momentum_buffers: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`rmsprop_for_loop`, on tensors of one device and dtype."""
    advance(steps)
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    foreach_update_square_average(square_avgs, directions, decay=alpha)
    if centered:
        bucket_grad_avgs = grad_avgs
        foreach_update_average(bucket_grad_avgs, directions, decay=alpha)
        rms = torch._foreach_addcmul(square_avgs, bucket_grad_avgs, bucket_grad_avgs, value=-1)
        torch._foreach_sqrt_(rms)
    else:
        rms = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(rms, eps)
    if momentum > 0:
        buffers = momentum_buffers
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_addcdiv_(buffers, directions, rms)
        torch._foreach_add_(params, buffers, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, directions, rms, value=-lr)


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman and Hinton, 2012), a drop-in twin of :class:`torch.optim.RMSprop`.

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha)\, d_t^2 \\
        \bar g_t &= \alpha \bar g_{t-1} + (1 - \alpha)\, d_t
            \quad \text{(centered only)} \\
        r_t &= \sqrt{v_t - \bar g_t^2} + \epsilon
            \quad \text{(centered, Graves 2013), else } \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + d_t / r_t, \qquad \theta_t = \theta_{t-1} - \gamma b_t
            \quad (\mu > 0;\ \text{else } \theta_t = \theta_{t-1} - \gamma d_t / r_t)

    State: ``step``, ``square_avg`` (:math:`v`), ``momentum_buffer`` when
    ``momentum > 0`` and ``grad_avg`` (:math:`\bar g`) when ``centered``, all
    starting at zero.
    """

    state_spec = spec(
        square_avg=zeros(),
        grad_avg=zeros(when="centered"),
        momentum_buffer=zeros(when="momentum"),
        step=counter(),
    )
    for_loop_update, foreach_update = rmsprop_for_loop, rmsprop_foreach
    supports_capturable = True
    fused_update = compiled_fused(rmsprop_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, centered=centered, foreach=foreach, maximize=maximize)
        check_non_negative("momentum", momentum)
        check_non_negative("alpha", alpha)
        super().__init__(params, defaults_from(locals()))
