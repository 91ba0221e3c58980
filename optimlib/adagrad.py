r"""Adagrad: per-coordinate learning rates from the sum of squared gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._foreach import numbers
from optimlib._functional import advance, descent_direction, foreach_descent_direction, overwritable
from optimlib._fused import adagrad_fused
from optimlib._validation import check_common, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, filled, spec


def adagrad_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    if weight_decay != 0 and any(grad.is_sparse for grad in grads):
        raise RuntimeError("Adagrad: weight_decay is not compatible with sparse gradients")
    for param, grad, total, step in zip(params, grads, sums, advance(steps), strict=True):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        decayed_lr = lr / (1 + (step - 1) * lr_decay)
        if direction.is_sparse:
            _sparse_update(param, direction.coalesce(), total, lr=decayed_lr, eps=eps)
            continue
        total.addcmul_(direction, direction, value=1)
        std = overwritable(total.sqrt()).add_(eps)
        param.addcdiv_(direction, std, value=-decayed_lr)


def _sparse_update(param: Tensor, grad: Tensor, total: Tensor, *, lr: float, eps: float) -> None:
    """Adagrad on the rows a sparse gradient touches; the update is not linear, so the
    indices are made unique (coalesced) first."""
    indices, values = grad._indices(), grad._values()

    def sparse(new_values: Tensor) -> Tensor:
        if indices.numel() == 0 or new_values.numel() == 0:
            return torch.empty_like(grad)
        return torch.sparse_coo_tensor(indices, new_values, grad.size(), check_invariants=False)

    total.add_(sparse(values.pow(2)))
    std_values = total.sparse_mask(grad)._values().sqrt_().add_(eps)
    param.add_(sparse(values / std_values), alpha=-lr)


def adagrad_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`adagrad_for_loop`, on tensors of one device and dtype."""
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    negative_lrs = [-lr / (1 + (step - 1) * lr_decay) for step in advance(steps)]
    torch._foreach_addcmul_(sums, directions, directions, value=1)
    stds = torch._foreach_sqrt(sums)
    torch._foreach_add_(stds, eps)
    torch._foreach_addcdiv_(params, directions, stds, numbers(negative_lrs))


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), a drop-in twin of :class:`torch.optim.Adagrad`.

    Each coordinate accumulates the squares of its gradients and is scaled by
    the inverse square root of that sum, so rarely-updated coordinates (sparse
    features) keep large steps while busy ones slow down:

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1} \\
        \tilde\gamma_t &= \frac{\gamma}{1 + (t - 1)\,\eta} \\
        s_t &= s_{t-1} + d_t^2, \qquad s_0 = \texttt{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t \frac{d_t}{\sqrt{s_t} + \epsilon}

    with learning-rate decay :math:`\eta` (``lr_decay``). The state is created
    for every parameter at construction, as in ``torch.optim``: ``step`` and
    ``sum``. Sparse gradients are supported (without weight decay), except
    with ``fused=True``, which runs torch's fused kernel (``optimlib._fused``).
    """

    state_spec = spec(sum=filled("initial_accumulator_value"), step=counter())
    for_loop_update, foreach_update = adagrad_for_loop, adagrad_foreach
    fused_update = adagrad_fused
    fused_sparse_gradient_error = "`fused` does not support sparse grad or complex param"
    creates_state_eagerly = True
    supports_sparse = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, eps, weight_decay, foreach=foreach, maximize=maximize)
        check_non_negative("lr_decay", lr_decay)
        check_non_negative("initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, defaults_from(locals()))
