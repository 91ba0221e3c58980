r"""Adafactor: Adam-like scaling with a second moment kept in factored form."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch
from torch import Tensor

from optimlib._compiled import compiled_fused
from optimlib._functional import (
    add_scaled_,
    advance,
    as_number,
    decay_weights,
    descent_direction,
    foreach_decay_weights,
    foreach_descent_direction,
    larger,
    lerp_toward_,
    smaller,
)
from optimlib._validation import _as_number, check_bool, check_foreach
from optimlib.optimizer import (
    Optimizer,
    OptionalStates,
    ParamsT,
    UpdateFn,
    counter,
    created_by_update,
    defaults_from,
    spec,
)


def _rms(tensor: Tensor) -> float:
    r"""The root mean square :math:`\lVert x \rVert_2 / \sqrt{n}`, as a number.

    Read back to the host (a synchronisation on a GPU), as torch.optim reads
    it: the step size and the clipping factor are computed in Python.
    """
    return as_number(tensor.norm(2)) / (tensor.numel() ** 0.5)


def _clipping_factor(update: Tensor, d: float) -> float:
    r""":math:`\max(1, \mathrm{RMS}(U) / d)`, rounded as torch rounds it: one division by
    :math:`\sqrt{n}\, d`."""
    return larger(1.0, as_number(update.norm(2)) / ((update.numel() ** 0.5) * d))


def _mean_square(direction: Tensor, dim: int) -> Tensor:
    """The mean of the squares along ``dim``, kept as a dimension of size 1.

    Computed from the norm, so that no temporary the size of the gradient is made.
    """
    return (
        torch.linalg.vector_norm(direction, dim=dim, keepdim=True)
        .square_()
        .div_(direction.size(dim))
    )


def adafactor_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    row_vars: OptionalStates,
    col_vars: OptionalStates,
    variances: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    beta2_decay: float,
    eps: tuple[float, float],
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor.

    ``eps[0]`` is a number here: :meth:`Adafactor.hyperparameters` resolves ``None``.
    """
    eps1, eps2 = eps
    for i, (param, grad, step) in enumerate(zip(params, grads, advance(steps), strict=True)):
        direction = descent_direction(param, grad, weight_decay=0, maximize=maximize)
        relative_step = smaller(lr, 1 / step**0.5)
        step_size = larger(eps2, _rms(param)) * relative_step  # before the weights decay
        decay_weights(param, lr=lr, weight_decay=weight_decay)
        new_weight = step**beta2_decay  # 1 - beta2_t
        if direction.dim() > 1:
            row_var, col_var = row_vars[i], col_vars[i]
            lerp_toward_(row_var, _mean_square(direction, -1), new_weight)
            lerp_toward_(col_var, _mean_square(direction, -2), new_weight)
            variance = row_var @ col_var
            variance.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            lerp_toward_(variances[i], direction * direction, new_weight)
            variance = variances[i].clone()
        update = variance.clamp_(min=eps1 * eps1).rsqrt_().mul_(direction)
        add_scaled_(param, update, -step_size / _clipping_factor(update, d))


def adafactor_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    row_vars: OptionalStates,
    col_vars: OptionalStates,
    variances: OptionalStates,
    steps: list[Tensor],
    *,
    lr: float,
    beta2_decay: float,
    eps: tuple[float, float],
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The same update as :func:`adafactor_for_loop`, on one bucket of tensors.

    A bucket holds tensors of one device and one dtype that are either all
    factored (two or more dimensions) or all not (see :meth:`Adafactor.bucket_key`).
    """
    eps1, eps2 = eps
    counts = advance(steps)
    directions = foreach_descent_direction(params, grads, weight_decay=0, maximize=maximize)
    new_weights = [t**beta2_decay for t in counts]
    step_sizes = [
        max(eps2, _rms(p)) * min(lr, 1 / t**0.5) for p, t in zip(params, counts, strict=True)
    ]
    foreach_decay_weights(params, lr=lr, weight_decay=weight_decay)
    if directions[0].dim() > 1:
        for factors, dim in ((row_vars, -1), (col_vars, -2)):
            means = [torch.linalg.vector_norm(g, dim=dim, keepdim=True) for g in directions]
            torch._foreach_mul_(means, means)
            torch._foreach_div_(means, [float(g.size(dim)) for g in directions])
            torch._foreach_lerp_(factors, means, new_weights)
        estimates = [r @ c for r, c in zip(row_vars, col_vars, strict=True)]
        row_means = [r.mean(dim=-2, keepdim=True) for r in row_vars]
        torch._foreach_clamp_min_(row_means, eps1)
        torch._foreach_div_(estimates, row_means)
    else:
        squares = torch._foreach_mul(directions, directions)
        torch._foreach_lerp_(variances, squares, new_weights)
        del squares  # freed before the estimates exist: one model-sized temporary
        estimates = [v.clone() for v in variances]
    torch._foreach_clamp_min_(estimates, eps1 * eps1)
    torch._foreach_rsqrt_(estimates)
    torch._foreach_mul_(estimates, directions)
    updates = estimates
    torch._foreach_mul_(
        updates,
        [
            float(-size / _clipping_factor(u, d))
            for size, u in zip(step_sizes, updates, strict=True)
        ],
    )
    torch._foreach_add_(params, updates)


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer and Stern, 2018), a drop-in twin of :class:`torch.optim.Adafactor`.

    Adam keeps a second moment as large as the parameter; for an
    :math:`n \times m` matrix Adafactor keeps only its row means :math:`R`
    (:math:`n` numbers) and column means :math:`C` (:math:`m` numbers), and
    rebuilds the estimate as their outer product over the overall mean: the
    best rank-one fit in I-divergence (the paper's Section 3). With
    :math:`G_t = \pm g_t` (``maximize`` flips the sign):

    .. math::

        \hat\beta_{2,t} &= 1 - t^{\tau}, \qquad
        \rho_t = \min\big(\gamma, 1/\sqrt t\big), \qquad
        \alpha_t = \max\big(\epsilon_2, \mathrm{RMS}(\theta_{t-1})\big)\, \rho_t \\
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\, \theta_{t-1} \\
        R_t &= \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{\text{cols}}(G_t \odot G_t) \\
        C_t &= \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{\text{rows}}(G_t \odot G_t) \\
        \hat V_t &= \frac{R_t C_t}{\max(\operatorname{mean}(R_t), \epsilon_1)}
            \quad \text{(a vector or a scalar: }
            \hat V_t = \hat\beta_{2,t} \hat V_{t-1} + (1 - \hat\beta_{2,t})\, G_t \odot G_t) \\
        U_t &= \frac{G_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \qquad
        \theta_t = \theta_{t-1} - \frac{\alpha_t}{\max\big(1, \mathrm{RMS}(U_t)/d\big)}\, U_t

    :math:`\tau` is ``beta2_decay`` (:math:`\le 0`, default :math:`-0.8`): the
    decay rate grows towards 1 as the averages need less of the newest
    gradient. The step is *relative*: :math:`\alpha_t` scales with the size
    of the parameter (at least :math:`\epsilon_2`), and the update is clipped
    to an RMS of at most :math:`d`. A tensor with more than two dimensions is
    factored over its last two, once per leading index.

    As in torch.optim, and unlike the paper: ``lr`` (:math:`\gamma`) caps the
    relative step :math:`\rho_t` (the paper's constant 0.01 is the default)
    and is the coefficient of the decoupled weight decay :math:`\lambda`;
    :math:`\epsilon_1` guards the divisions rather than being added to the
    squared gradient; means replace the paper's sums. ``eps=(None, ...)``
    takes :math:`\epsilon_1` as the machine epsilon of the dtype of the
    group's first parameter with a gradient, for every parameter of the
    group, as torch.optim's for-loop does. ``foreach=None`` runs the for-loop
    on every device: the foreach path holds a temporary the size of each
    parameter, and Adafactor is chosen to save memory. Complex parameters and
    sparse gradients are refused, with torch's errors.

    State: ``step`` and, for a tensor of two or more dimensions, ``row_var``
    (:math:`R`, the last dimension of size 1) and ``col_var`` (:math:`C`, the
    second-to-last of size 1); for a vector or a scalar, ``variance``
    (:math:`\hat V`, shaped like it).
    """

    # The factors or the full moment, by the parameter's shape: states() below
    # creates them (created_by_update keeps the base class from making all three).
    state_spec = spec(
        row_var=created_by_update(),
        col_var=created_by_update(),
        variance=created_by_update(),
        step=counter(),
    )
    for_loop_update, foreach_update = adafactor_for_loop, adafactor_foreach
    fused_update = compiled_fused(adafactor_for_loop, flatten=False, chunk=1)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        _check("lr", lr, "Learning rate should be >= 0", lambda x: 0.0 <= x)
        _check("beta2_decay", beta2_decay, "beta2_decay should be <= 0", lambda x: 0.0 >= x)
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"Invalid eps: expected a pair (eps1, eps2), got {eps!r}")
        if eps[0] is not None:
            _check("eps[0]", eps[0], "epsilon1 should be >= 0", lambda x: 0.0 <= x)
        _check("eps[1]", eps[1], "epsilon2 should be >= 0", lambda x: 0.0 <= x)
        _check("d", d, "Clipping threshold d should be >= 1", lambda x: 1.0 <= x)
        _check("weight_decay", weight_decay, "weight_decay should be >= 0", lambda x: 0.0 <= x)
        check_foreach(foreach)
        check_bool("maximize", maximize)
        super().__init__(params, defaults_from(locals()))

    def check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        for param in params:  # torch checks each parameter in turn, complex first
            if param.is_complex():
                raise RuntimeError("Adafactor does not support complex parameters")
            if param.grad is not None and param.grad.is_sparse:
                raise RuntimeError("Adafactor does not support sparse gradients")
        super().check_group(group, params)

    def states(self, params: Iterable[Tensor], group: dict[str, Any]) -> list[dict[str, Any]]:
        """``step``, then the factors or the full second moment, whichever the shape calls for."""
        params = list(params)
        states = super().states(params, group)
        for param, state in zip(params, states, strict=True):
            if "row_var" in state or "variance" in state:
                continue
            if param.dim() > 1:
                state["row_var"] = param.new_zeros((*param.shape[:-1], 1))
                state["col_var"] = param.new_zeros((*param.shape[:-2], 1, param.shape[-1]))
            else:
                state["variance"] = torch.zeros_like(param)
        return states

    def hyperparameters(self, group: dict[str, Any], update: UpdateFn) -> dict[str, Any]:
        values = super().hyperparameters(group, update)
        eps1, eps2 = values["eps"]
        if eps1 is None:
            first = next(p for p in group["params"] if p.grad is not None)
            values["eps"] = (torch.finfo(first.dtype).eps, eps2)
        return values

    def bucket_key(self, param: Tensor) -> Hashable:
        """Factored tensors and the others in separate foreach buckets."""
        return param.dim() > 1

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        # As torch.optim.Adafactor: the foreach path only when asked for, even on CUDA.
        super().update_group(group, params, grads, foreach=foreach and bool(group["foreach"]))


def _check(name: str, value: Any, requirement: str, holds: Callable[[float], bool]) -> None:
    """Raise in torch.optim.Adafactor's words unless ``holds(value)`` (NaN never holds)."""
    if not holds(_as_number(name, value)):
        raise ValueError(f"{requirement} but is: {value}")
