r"""Rprop: per-coordinate step sizes driven by the sign of the gradient alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import bucket_indices, pick, to_scalar
from optimlib._functional import advance, new_counter
from optimlib._validation import check_common, check_range
from optimlib.optimizer import Optimizer, ParamsT


class Rprop(Optimizer):
    r"""Rprop (Riedmiller and Braun, 1993), a drop-in twin of :class:`torch.optim.Rprop`.

    Each coordinate has its own step size :math:`\Delta`; only the *sign* of
    the gradient is used:

    .. math::

        s_t &= \operatorname{sign}(g_t\, g_{t-1}) \\
        \Delta_t &= \operatorname{clip}\Big(\Delta_{t-1} \times
            \begin{cases} \eta_+ & s_t > 0 \\ \eta_- & s_t < 0 \\ 1 & s_t = 0 \end{cases},
            \ \Delta_{\min},\ \Delta_{\max}\Big) \\
        g_t &\leftarrow 0 \quad \text{where } s_t < 0
            \quad \text{(skip the step after a sign change)} \\
        \theta_t &= \theta_{t-1} - \Delta_t \operatorname{sign}(g_t)

    (with :math:`-g` under ``maximize``). The gradient's size is ignored, so
    Rprop needs full-batch gradients: mini-batch noise flips signs at random.
    State: ``step``, ``prev`` (the last gradient used) and ``step_size``
    (:math:`\Delta`, starting at ``lr``).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_common(lr, foreach=foreach, maximize=maximize)
        etaminus, etaplus = etas
        check_range(
            "etas[0] (etaminus)", etaminus, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        check_range("etas[1] (etaplus)", etaplus, 1.0, low_inclusive=False)
        smallest, largest = step_sizes
        check_range("step_sizes[0] (minimum)", smallest, 0.0)
        check_range("step_sizes[1] (maximum)", largest, smallest)
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        lr = to_scalar(group["lr"])
        states = self.states(
            params,
            lambda p: {
                "step": new_counter(),
                "prev": torch.zeros_like(p),
                "step_size": torch.full_like(p.grad, lr),
            },
        )
        etaminus, etaplus = group["etas"]
        smallest, largest = group["step_sizes"]
        update = rprop_foreach if foreach else rprop_for_loop
        update(
            params,
            grads,
            [state["prev"] for state in states],
            [state["step_size"] for state in states],
            [state["step"] for state in states],
            etaminus=etaminus,
            etaplus=etaplus,
            smallest=smallest,
            largest=largest,
            maximize=group["maximize"],
        )


def _step_factors(grad: Tensor, prev: Tensor, *, etaminus: float, etaplus: float) -> Tensor:
    """Per coordinate: etaplus where the sign held, etaminus where it flipped, 1 otherwise."""
    agreement = grad.mul(prev).sign()
    factors = torch.ones_like(agreement)
    factors[agreement.gt(0)] = etaplus
    factors[agreement.lt(0)] = etaminus
    return factors


def rprop_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    steps: list[Tensor],
    *,
    etaminus: float,
    etaplus: float,
    smallest: float,
    largest: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    advance(steps)
    for param, grad, prev, step_size in zip(params, grads, prevs, step_sizes, strict=True):
        grad = -grad if maximize else grad
        factors = _step_factors(grad, prev, etaminus=etaminus, etaplus=etaplus)
        step_size.mul_(factors).clamp_(smallest, largest)
        grad = grad.clone()
        grad[factors.eq(etaminus)] = 0
        param.addcmul_(grad.sign(), step_size, value=-1)
        prev.copy_(grad)


def rprop_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    step_sizes: list[Tensor],
    steps: list[Tensor],
    *,
    etaminus: float,
    etaplus: float,
    smallest: float,
    largest: float,
    maximize: bool,
) -> None:
    """The same update as :func:`rprop_for_loop`, a few kernels per device and dtype."""
    advance(steps)
    for indices in bucket_indices(params):
        bucket_params, bucket_prevs = pick(params, indices), pick(prevs, indices)
        sizes = pick(step_sizes, indices)
        grads_ = pick(grads, indices)
        directions = torch._foreach_neg(grads_) if maximize else torch._foreach_mul(grads_, 1.0)
        factors = [
            _step_factors(grad, prev, etaminus=etaminus, etaplus=etaplus)
            for grad, prev in zip(directions, bucket_prevs, strict=True)
        ]
        torch._foreach_mul_(sizes, factors)
        torch._foreach_clamp_min_(sizes, smallest)
        torch._foreach_clamp_max_(sizes, largest)
        for direction, factor in zip(directions, factors, strict=True):
            direction[factor.eq(etaminus)] = 0
        torch._foreach_addcmul_(bucket_params, torch._foreach_sign(directions), sizes, value=-1)
        torch._foreach_copy_(bucket_prevs, directions)
