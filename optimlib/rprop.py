r"""Rprop: per-coordinate step sizes driven by the sign of the gradient alone."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._foreach import foreach_copy_
from optimlib._functional import advance
from optimlib._validation import check_common, check_etas, check_range
from optimlib.optimizer import Optimizer, ParamsT, counter, defaults_from, filled, spec, zeros


def _step_factors(
    grad: Tensor, prev: Tensor, *, etaminus: float, etaplus: float, negate: bool = False
) -> Tensor:
    """Per coordinate: etaplus where the sign held, etaminus where it flipped, 1 otherwise.

    ``negate`` compares ``-grad`` with ``prev`` (``maximize``) without a copy of it.
    """
    agreement = grad.mul(prev).sign()
    if negate:
        agreement.neg_()
    # masked_fill_ rather than factors[mask] = eta: the same values, and DTensors take it.
    factors = torch.ones_like(agreement).masked_fill_(agreement.gt(0), etaplus)
    return factors.masked_fill_(agreement.lt(0), etaminus)


def rprop_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    deltas: list[Tensor],
    steps: list[Tensor],
    *,
    etas: tuple[float, float],
    step_sizes: tuple[float, float],
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor.

    ``deltas`` are the per-coordinate step sizes (``state["step_size"]``);
    ``step_sizes`` is the group's pair of bounds on them, as torch names it.
    """
    (etaminus, etaplus), (smallest, largest) = etas, step_sizes
    advance(steps)
    for param, grad, prev, delta in zip(params, grads, prevs, deltas, strict=True):
        grad = -grad if maximize else grad
        factors = _step_factors(grad, prev, etaminus=etaminus, etaplus=etaplus)
        delta.mul_(factors).clamp_(smallest, largest)
        grad = grad.masked_fill(factors.eq(etaminus), 0)
        param.addcmul_(grad.sign(), delta, value=-1)
        prev.copy_(grad)


def rprop_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    prevs: list[Tensor],
    deltas: list[Tensor],
    steps: list[Tensor],
    *,
    etas: tuple[float, float],
    step_sizes: tuple[float, float],
    maximize: bool,
) -> None:
    """The same update as :func:`rprop_for_loop`, on tensors of one device and dtype."""
    (etaminus, etaplus), (smallest, largest) = etas, step_sizes
    advance(steps)
    factors = [
        _step_factors(grad, prev, etaminus=etaminus, etaplus=etaplus, negate=maximize)
        for grad, prev in zip(grads, prevs, strict=True)
    ]
    torch._foreach_mul_(deltas, factors)
    torch._foreach_clamp_min_(deltas, smallest)
    torch._foreach_clamp_max_(deltas, largest)
    # The direction goes straight into prevs, which it replaces, rather than
    # into a copy of the gradients: one model-sized temporary at a time.
    foreach_copy_(prevs, grads)
    if maximize:
        torch._foreach_neg_(prevs)
    for prev, factor in zip(prevs, factors, strict=True):
        prev.masked_fill_(factor.eq(etaminus), 0)
    del factors
    torch._foreach_addcmul_(params, torch._foreach_sign(prevs), deltas, value=-1)


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

    state_spec = spec(prev=zeros(), step_size=filled("lr"), step=counter())
    for_loop_update, foreach_update = rprop_for_loop, rprop_foreach
    supports_capturable = True
    fused_update = compiled_fused(rprop_for_loop, tensors=())

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
        fused: bool | None = None,
    ) -> None:
        check_common(lr, foreach=foreach, maximize=maximize)
        check_etas(etas)
        smallest, largest = step_sizes
        check_range("step_sizes[0] (minimum)", smallest, 0.0)
        check_range("step_sizes[1] (maximum)", largest, smallest)
        super().__init__(params, defaults_from(locals()))
