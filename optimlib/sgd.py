r"""Stochastic gradient descent with momentum, dampening, weight decay and Nesterov."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._functional import descent_direction, foreach_descent_direction, is_learned
from optimlib._fused import sgd_fused
from optimlib._validation import check_common, check_non_negative, check_range
from optimlib.optimizer import (
    Optimizer,
    OptionalStates,
    ParamsT,
    created_by_update,
    defaults_from,
    spec,
)


def sgd_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: OptionalStates,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The reference implementation: one in-place update per tensor.

    ``momentum_buffers`` holds each parameter's buffer, ``None`` before its
    first step; new buffers are written back into the list.
    """
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        if momentum != 0:
            buffer = momentum_buffers[i]
            if buffer is None:
                buffer = momentum_buffers[i] = direction.detach().clone()
            else:
                buffer.mul_(momentum).add_(direction, alpha=1 - dampening)
            direction = direction.add(buffer, alpha=momentum) if nesterov else buffer
        if is_learned(lr):  # differentiable=True with a tensor lr that requires grad
            param.addcmul_(direction, lr, value=-1)
        else:
            param.add_(direction, alpha=-lr)


def sgd_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: OptionalStates,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`sgd_for_loop`, on tensors of one device and dtype."""
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    if momentum != 0:
        if all(buffer is not None for buffer in momentum_buffers):
            buffers = momentum_buffers
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, directions, alpha=1 - dampening)
        else:
            # First step for some tensors: start their buffers as the for-loop does.
            for i, direction in enumerate(directions):
                buffer = momentum_buffers[i]
                if buffer is None:
                    momentum_buffers[i] = direction.detach().clone()
                else:
                    buffer.mul_(momentum).add_(direction, alpha=1 - dampening)
            buffers = momentum_buffers
        if nesterov and directions is not grads:
            # Already a copy (weight decay or maximize made it): update it in place.
            torch._foreach_add_(directions, buffers, alpha=momentum)
        elif nesterov:
            directions = list(torch._foreach_add(directions, buffers, alpha=momentum))
        else:
            directions = buffers
    torch._foreach_add_(params, directions, alpha=-lr)


class SGD(Optimizer):
    r"""Stochastic gradient descent, a drop-in twin of :class:`torch.optim.SGD`.

    With gradient :math:`g_t`, learning rate :math:`\gamma`, momentum
    :math:`\mu`, dampening :math:`\tau` and weight decay :math:`\lambda`, one
    step is

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1}
            \quad (\text{minus when } \texttt{maximize}) \\
        b_t &= \begin{cases} d_t & t = 1 \\
                             \mu\, b_{t-1} + (1 - \tau)\, d_t & t > 1 \end{cases} \\
        \theta_t &= \theta_{t-1} - \gamma \begin{cases}
              d_t & \mu = 0 \\
              b_t & \mu > 0, \text{ heavy ball (Polyak, 1964)} \\
              d_t + \mu\, b_t & \mu > 0, \text{ Nesterov (Sutskever et al., 2013)}
           \end{cases}

    Plain SGD (:math:`\mu = 0`) is the rule of Robbins and Monro (1951). The
    buffer :math:`b` is stored as ``state[p]["momentum_buffer"]`` and starts as
    a copy of the first direction, as in ``torch.optim.SGD``. Note that PyTorch
    puts :math:`\gamma` outside the buffer; Sutskever et al. put it inside,
    which differs as soon as the learning rate changes (Chapter 3).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\gamma \ge 0`.
        momentum: :math:`\mu \ge 0`.
        dampening: :math:`\tau`, the share of the new direction dropped from the buffer.
        weight_decay: :math:`\lambda \ge 0`, an L2 penalty added to the gradient.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
        maximize: ascend the objective instead of descending it.
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the
            per-tensor loop, ``None`` to choose like ``torch.optim`` (foreach on CUDA).
        differentiable: ``True`` lets autograd record the step (see
            :meth:`optimlib.optimizer.Optimizer.step`).
        fused: ``True`` for torch's fused kernel (one per device and dtype; see
            ``optimlib._fused``), which also applies a ``GradScaler``'s
            scale and skips a step with an overflowed gradient.
    """

    supports_complex = True
    supports_sparse = True
    learnable_hyperparameters = ("lr", "weight_decay")
    state_spec = spec(momentum_buffer=created_by_update(when="momentum"))
    for_loop_update, foreach_update = sgd_for_loop, sgd_foreach
    fused_update = sgd_fused
    fused_sparse_gradient_error = "`_fused_sgd` does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(
            lr, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, foreach=foreach
        )
        check_non_negative("momentum", momentum)
        check_range("dampening", dampening)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov=True with momentum={momentum} and dampening={dampening}: "
                "Nesterov momentum needs momentum > 0 and dampening = 0"
            )
        super().__init__(params, defaults_from(locals()))
