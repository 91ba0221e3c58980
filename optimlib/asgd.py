r"""ASGD: stochastic gradient descent with a decaying step and an averaged iterate."""

from __future__ import annotations

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    advance,
    as_number,
    descent_direction,
    foreach_descent_direction,
    larger,
    scalars_are_tensors,
)
from optimlib._validation import check_common, check_non_negative
from optimlib.optimizer import Optimizer, ParamsT, defaults_from, scalar_on_device, spec, zeros


def _next_schedule(
    eta: Tensor, mu: Tensor, *, lr: float, lambd: float, alpha: float, t0: float, step: float
) -> None:
    """Write :math:`\\eta_t` and :math:`\\mu_t` into their (low-precision) state tensors."""
    eta.fill_(lr / ((1 + lambd * lr * step) ** alpha))
    mu.fill_(1 / larger(1, step - t0))


def _average(ax: Tensor, param: Tensor, mu: Tensor) -> None:
    if scalars_are_tensors():  # compiled or capturable: both, chosen without a host read
        ax.copy_(torch.where(mu != 1, ax + (param - ax) * mu, param))
    elif mu.item() != 1:
        ax.add_(param.sub(ax).mul_(mu))
    else:
        ax.copy_(param)


def asgd_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    axs: list[Tensor],
    etas: list[Tensor],
    mus: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lambd: float,
    alpha: float,
    t0: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor."""
    for param, grad, ax, eta, mu, step in zip(
        params, grads, axs, etas, mus, advance(steps), strict=True
    ):
        direction = descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)
        step_size = as_number(eta)
        param.mul_(1 - lambd * step_size)
        add_scaled_(param, direction, -step_size)
        _average(ax, param, mu)
        _next_schedule(eta, mu, lr=lr, lambd=lambd, alpha=alpha, t0=t0, step=step)


def asgd_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    axs: list[Tensor],
    etas: list[Tensor],
    mus: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lambd: float,
    alpha: float,
    t0: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`asgd_for_loop`, on tensors of one device and dtype."""
    counts = advance(steps)
    directions = foreach_descent_direction(
        params, grads, weight_decay=weight_decay, maximize=maximize
    )
    step_sizes = [eta.item() for eta in etas]
    torch._foreach_mul_(params, [1 - lambd * size for size in step_sizes])
    torch._foreach_add_(params, torch._foreach_mul(directions, [-s for s in step_sizes]))
    for param, ax, mu in zip(params, axs, mus, strict=True):
        _average(ax, param, mu)
    for eta, mu, step in zip(etas, mus, counts, strict=True):
        _next_schedule(eta, mu, lr=lr, lambd=lambd, alpha=alpha, t0=t0, step=step)


class ASGD(Optimizer):
    r"""Averaged SGD (Polyak and Juditsky, 1992), a drop-in twin of :class:`torch.optim.ASGD`.

    .. math::

        d_t &= \pm g_t + \lambda \theta_{t-1} \\
        \theta_t &= (1 - \lambda_{\text{ASGD}}\, \eta_{t-1})\, \theta_{t-1} - \eta_{t-1} d_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu_{t-1} (\theta_t - \bar\theta_{t-1}) \\
        \eta_t &= \frac{\gamma}{(1 + \lambda_{\text{ASGD}}\, \gamma\, t)^{\alpha}}, \qquad
        \mu_t = \frac{1}{\max(1, t - t_0)}

    with :math:`\lambda_{\text{ASGD}}` = ``lambd``, :math:`\alpha` = ``alpha``
    and :math:`t_0` = ``t0``. The parameters follow SGD with a slowly decaying
    step; the average :math:`\bar\theta` (``state["ax"]``) starts averaging
    after step :math:`t_0` and is the estimate Polyak and Juditsky prove
    optimal. Copy it into the model for evaluation. State: ``step``, ``eta``,
    ``mu`` and ``ax``, the scalars as 0-d tensors on the parameter's device.
    """

    state_spec = spec(
        ax=zeros(), eta=scalar_on_device("lr"), mu=scalar_on_device(1.0), step=scalar_on_device(0.0)
    )
    for_loop_update, foreach_update = asgd_for_loop, asgd_foreach
    supports_capturable = True
    fused_update = compiled_fused(asgd_for_loop)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        check_non_negative("lambd", lambd)
        check_non_negative("alpha", alpha)
        check_non_negative("t0", t0)
        super().__init__(params, defaults_from(locals()))
