r"""SparseAdam: Adam on the rows a sparse gradient touches, and on those alone."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optimlib._functional import bias_correction
from optimlib._validation import check_betas, check_bool, check_range
from optimlib.optimizer import (
    Optimizer,
    OptionalStates,
    ParamsT,
    created_by_update,
    defaults_from,
    spec,
    zeros,
)


def sparse_adam_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: OptionalStates,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    maximize: bool,
) -> None:
    """The reference implementation: one update per tensor, on its gradient's entries only."""
    beta1, beta2 = betas
    for param, grad, exp_avg, exp_avg_sq, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, advance_counts(params, steps), strict=True
    ):
        # The update is not linear in the gradient, so an entry listed twice
        # (a row looked up twice in one batch) is summed into one first.
        grad = (-grad if maximize else grad).coalesce()
        g = grad.values()
        if g.numel() == 0:  # nothing touched; the step still counts, as in torch.optim
            continue
        m = exp_avg.sparse_mask(grad).values()  # the touched entries, in the order of g
        v = exp_avg_sq.sparse_mask(grad).values()
        m_change = (g - m).mul_(1 - beta1)  # m + (1 - b1)(g - m) = b1 m + (1 - b1) g
        v_change = g.pow(2).sub_(v).mul_(1 - beta2)
        exp_avg.add_(on_entries_of(grad, m_change))
        exp_avg_sq.add_(on_entries_of(grad, v_change))
        step_size = lr * math.sqrt(bias_correction(beta2, step)) / bias_correction(beta1, step)
        denominator = (v + v_change).sqrt_().add_(eps)
        param.add_(on_entries_of(grad, -step_size * ((m + m_change) / denominator)))


def on_entries_of(grad: Tensor, values: Tensor) -> Tensor:
    """A sparse tensor with the entries of the coalesced ``grad`` holding ``values`` instead."""
    return torch.sparse_coo_tensor(
        grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
    )


def advance_counts(params: list[Tensor], counts: OptionalStates) -> list[int]:
    """Add one to each step count and return the new counts.

    torch.optim.SparseAdam counts in a Python int rather than a 0-d tensor
    (its checkpoints hold ints, and its bias corrections are computed in
    float64 from them), so the new counts are written back into ``counts``,
    from which the base class stores them; ``None`` is a first step. A
    parameter listed twice in a group shares one count, and its two updates
    see ``t + 1`` and then ``t + 2``, as in torch.optim.
    """
    latest: dict[int, int] = {}
    for i, (param, count) in enumerate(zip(params, counts, strict=True)):
        counts[i] = latest[id(param)] = latest.get(id(param), count or 0) + 1
    return list(counts)


class SparseAdam(Optimizer):
    r"""Adam for sparse gradients, a drop-in twin of :class:`torch.optim.SparseAdam`.

    Meant for dense parameters whose gradients are sparse tensors, such as the
    table of ``torch.nn.Embedding(sparse=True)``. Adam (Kingma and Ba, 2015)
    is applied to the entries the gradient holds, with the bias correction
    folded into the step size (the paper's Section 2, last paragraph):

    .. math::

        m_t[i] &= m_{t-1}[i] + (1 - \beta_1)\,(g_t[i] - m_{t-1}[i]) \\
        v_t[i] &= v_{t-1}[i] + (1 - \beta_2)\,(g_t[i]^2 - v_{t-1}[i]) \\
        \theta_t[i] &= \theta_{t-1}[i] - \gamma\,
            \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\,
            \frac{m_t[i]}{\sqrt{v_t[i]} + \epsilon}

    for every entry :math:`i` of the gradient (with ``maximize``, of
    :math:`-g_t`); entries listed more than once are summed first. All other
    entries of :math:`m`, :math:`v` and :math:`\theta` are left exactly as
    they were: a row not looked up keeps its moments, where Adam would decay
    them towards zero. :math:`t` counts the steps at which the parameter had
    a gradient, empty ones included. Unlike Adam, :math:`\epsilon` is added
    before the bias correction of :math:`v`, as in torch.optim.

    A dense gradient is refused at step time, and sparse or complex
    parameters at construction (and in ``add_param_group``, where
    torch.optim would update a complex parameter into nonsense), each with
    torch.optim's message. State: ``step`` (a Python int, as torch.optim keeps
    it), ``exp_avg`` (:math:`m`) and ``exp_avg_sq`` (:math:`v`).
    """

    state_spec = spec(exp_avg=zeros(), exp_avg_sq=zeros(), step=created_by_update())
    for_loop_update = sparse_adam_for_loop
    supports_sparse = True
    # Whether the constructor is adding the groups (it checks them all at once).
    _constructing = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        check_positive("lr", lr, label="learning rate")
        check_positive("eps", eps, label="epsilon value")
        check_betas(betas)
        check_bool("maximize", maximize)
        self._constructing = True
        super().__init__(params, defaults_from(locals()))
        self._constructing = False
        refuse_sparse_or_complex(self.param_groups)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, refusing sparse or complex parameters as the constructor does."""
        super().add_param_group(param_group)
        if not self._constructing:
            try:
                refuse_sparse_or_complex(self.param_groups[-1:], first=len(self.param_groups) - 1)
            except ValueError:
                self.param_groups.pop()
                raise

    def check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        super().check_group(group, params)
        if any(not p.grad.is_sparse for p in params if p.grad is not None):
            raise RuntimeError(
                "SparseAdam does not support dense gradients, please consider Adam instead"
            )


def check_positive(name: str, value: Any, *, label: str) -> None:
    """A finite number > 0 (torch.optim.SparseAdam refuses a zero lr or eps)."""
    check_range(name, value, 0.0, math.inf, low_inclusive=False, high_inclusive=False, label=label)


def refuse_sparse_or_complex(groups: list[dict[str, Any]], first: int = 0) -> None:
    """torch.optim.SparseAdam's check: every parameter dense and real, with the culprits'
    ``[group, position]`` indices in the message (``first`` numbers the first group)."""
    sparse, complex_ = [], []
    for group_index, group in enumerate(groups, start=first):
        for position, param in enumerate(group["params"]):
            if param.is_sparse:
                sparse.append([group_index, position])
            if param.is_complex():
                complex_.append([group_index, position])
    if sparse:
        raise ValueError(
            f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors"
        )
    if complex_:
        raise ValueError(
            f"Complex params at indices {complex_}: SparseAdam does not support complex parameters"
        )
