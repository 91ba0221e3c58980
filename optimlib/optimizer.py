"""The base class of optimlib's optimizers.

``torch.optim.Optimizer`` already keeps parameter groups, per-parameter state,
``zero_grad``, ``state_dict`` and hooks; Chapter 2 of the book rebuilds it from
scratch. What every optimlib algorithm adds on top is the same each time, so
it lives here once:

- argument checks that name the argument (:mod:`optimlib._validation`);
- refusing torch options optimlib does not implement (``fused=True``, ...);
- the step loop: closure evaluated with gradients enabled, parameters without
  a gradient skipped, and the choice between the for-loop and the foreach
  implementation made in one place (:func:`optimlib._foreach.use_foreach`).

An algorithm subclasses :class:`Optimizer` and implements
:meth:`Optimizer.update_group`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import use_foreach
from optimlib._validation import check_foreach, check_implemented, check_params

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` plus the step loop every optimlib algorithm shares."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_foreach(defaults.get("foreach"))
        check_implemented(type(self).__name__, defaults)
        super().__init__(check_params(params), defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one optimization step.

        Args:
            closure: optional; re-evaluates the model, calls ``backward()`` and
                returns the loss. It runs with gradients enabled, before the
                update, and its loss is returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Only the optimizer's own options: under torch.compile, Dynamo shows
            # every group with capturable=True, whether the algorithm has it or not.
            check_implemented(type(self).__name__, {k: group.get(k) for k in self.defaults})
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            foreach = use_foreach(group.get("foreach"), params, grads)
            self.update_group(group, params, grads, foreach=foreach)
        return loss

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        """Update the ``params`` of one group (those with a gradient) in place."""
        raise NotImplementedError
