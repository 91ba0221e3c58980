r"""Adagrad: per-coordinate learning rates from the sum of squared gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, numbers, pick, to_scalar
from optimlib._functional import advance, descent_direction, foreach_descent_direction, new_counter
from optimlib._validation import check_common, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT


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
    ``sum``. Sparse gradients are supported (without weight decay).
    """

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
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch.optim.Adagrad creates its state eagerly
            self.states(group["params"], self._initial_state(group))

    @staticmethod
    def _initial_state(group: dict[str, Any]):
        def initial(param: Tensor) -> dict[str, Tensor]:
            return {
                "step": new_counter(),
                "sum": torch.full_like(param, group["initial_accumulator_value"]),
            }

        return initial

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        states = self.states(params, self._initial_state(group))
        if group["weight_decay"] != 0 and any(grad.is_sparse for grad in grads):
            raise RuntimeError("Adagrad: weight_decay is not compatible with sparse gradients")
        update = adagrad_foreach if foreach else adagrad_for_loop
        update(
            params,
            grads,
            [state["sum"] for state in states],
            [state["step"] for state in states],
            lr=to_scalar(group["lr"]),
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


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
    for param, grad, total, step in zip(params, grads, sums, advance(steps), strict=True):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        decayed_lr = lr / (1 + (step - 1) * lr_decay)
        if direction.is_sparse:
            _sparse_update(param, direction.coalesce(), total, lr=decayed_lr, eps=eps)
            continue
        total.addcmul_(direction, direction, value=1)
        std = total.sqrt().add_(eps)
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
    """The same update as :func:`adagrad_for_loop`, a few kernels per device and dtype."""
    for indices in bucket_indices(params):
        bucket_params, bucket_sums = pick(params, indices), pick(sums, indices)
        directions = foreach_descent_direction(
            bucket_params, pick(grads, indices), weight_decay=weight_decay, maximize=maximize
        )
        negative_lrs = [-lr / (1 + (step - 1) * lr_decay) for step in advance(pick(steps, indices))]
        torch._foreach_addcmul_(bucket_sums, directions, directions, value=1)
        stds = torch._foreach_sqrt(bucket_sums)
        torch._foreach_add_(stds, eps)
        torch._foreach_addcdiv_(bucket_params, directions, stds, numbers(negative_lrs))
