r"""Stochastic gradient descent with momentum, dampening, weight decay and Nesterov."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, pick, to_scalar
from optimlib._functional import descent_direction, foreach_descent_direction
from optimlib._validation import check_bool, check_non_negative, check_range
from optimlib.optimizer import Optimizer, ParamsT


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
        differentiable, fused: accepted for compatibility at their default values
            only; optimlib does not implement them and raises otherwise.
    """

    supports_complex = True

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
        check_non_negative("lr", lr)
        check_non_negative("momentum", momentum)
        check_non_negative("weight_decay", weight_decay)
        check_range("dampening", dampening)
        check_bool("nesterov", nesterov)
        check_bool("maximize", maximize)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov=True with momentum={momentum} and dampening={dampening}: "
                "Nesterov momentum needs momentum > 0 and dampening = 0"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        momentum = group["momentum"]
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum else []
        update = sgd_foreach if foreach else sgd_for_loop
        update(
            params,
            grads,
            buffers,
            lr=to_scalar(group["lr"]),
            momentum=momentum,
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if momentum:
            for param, buffer in zip(params, buffers, strict=True):
                self.state[param]["momentum_buffer"] = buffer


def sgd_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
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
        param.add_(direction, alpha=-lr)


def sgd_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """The same update as :func:`sgd_for_loop`, a few kernels per device and dtype."""
    for indices in bucket_indices(params):
        bucket_params, bucket_grads = pick(params, indices), pick(grads, indices)
        directions = foreach_descent_direction(
            bucket_params, bucket_grads, weight_decay=weight_decay, maximize=maximize
        )
        if momentum != 0:
            buffers = [momentum_buffers[i] for i in indices]
            if all(buffer is not None for buffer in buffers):
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, directions, alpha=1 - dampening)
            else:
                # First step for some tensors: start their buffers as the for-loop does.
                for position, i in enumerate(indices):
                    if buffers[position] is None:
                        buffers[position] = directions[position].detach().clone()
                        momentum_buffers[i] = buffers[position]
                    else:
                        buffers[position].mul_(momentum).add_(
                            directions[position], alpha=1 - dampening
                        )
            if nesterov and directions is not bucket_grads:
                # Already a copy (weight decay or maximize made it): update it in place.
                torch._foreach_add_(directions, buffers, alpha=momentum)
            elif nesterov:
                directions = torch._foreach_add(directions, buffers, alpha=momentum)
            else:
                directions = buffers
        torch._foreach_add_(bucket_params, directions, alpha=-lr)
