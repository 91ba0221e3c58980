r"""Stochastic gradient descent.

This first version is plain SGD, the algorithm of Chapter 1; momentum,
dampening, weight decay and Nesterov come with Chapter 3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import group_by_device_and_dtype, use_foreach
from optimlib._validation import check_foreach, check_non_negative, check_params


class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent, a drop-in twin of :class:`torch.optim.SGD`.

    At step :math:`t` each parameter :math:`\theta` with gradient
    :math:`g_t = \nabla_\theta L(\theta_{t-1})` moves against the gradient
    (Robbins and Monro, 1951):

    .. math::

        \theta_t = \theta_{t-1} - \gamma\, g_t,

    where :math:`\gamma` is the learning rate ``lr``. With ``maximize=True``
    the sign flips and the step climbs the objective instead.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\gamma \ge 0`.
        maximize: ascend instead of descend.
        foreach: ``True`` for the multi-tensor implementation, ``False`` for the
            per-tensor loop, ``None`` to choose like ``torch.optim`` (foreach on CUDA).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-3,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_non_negative("lr", lr)
        check_foreach(foreach)
        defaults = {"lr": lr, "maximize": maximize, "foreach": foreach}
        super().__init__(check_params(params), defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one optimization step; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if not params:
                continue
            update = sgd_foreach if use_foreach(group["foreach"], grads) else sgd_for_loop
            update(params, grads, lr=group["lr"], maximize=group["maximize"])
        return loss


def sgd_for_loop(
    params: list[Tensor], grads: list[Tensor], *, lr: float | Tensor, maximize: bool
) -> None:
    """The reference implementation: one in-place update per tensor."""
    for param, grad in zip(params, grads, strict=True):
        direction = -grad if maximize else grad
        param.add_(direction, alpha=-lr)


def sgd_foreach(
    params: list[Tensor], grads: list[Tensor], *, lr: float | Tensor, maximize: bool
) -> None:
    """The same update as :func:`sgd_for_loop`, one kernel per device and dtype."""
    for param_bucket, grad_bucket in group_by_device_and_dtype(params, grads):
        directions = torch._foreach_neg(grad_bucket) if maximize else grad_bucket
        torch._foreach_add_(param_bucket, directions, alpha=-lr)
