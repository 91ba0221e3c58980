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
from optimlib._functional import scalar_dtype
from optimlib._validation import check_foreach, check_implemented, check_params

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class Optimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` plus the step loop every optimlib algorithm shares."""

    #: Whether the update is written for complex parameters (SGD's is, as is).
    supports_complex: bool = False
    #: 0-d state kept in the scalar dtype (float32) whatever the parameter's dtype,
    #: as torch.optim creates it (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``).
    scalar_state_keys: tuple[str, ...] = ()

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
            # fused and differentiable only: under torch.compile on a GPU, Dynamo
            # shows every group with capturable=True, and optimlib's updates are
            # correct either way (their step counters stay on the CPU).
            check_implemented(
                type(self).__name__,
                {k: group.get(k) for k in ("fused", "differentiable") if k in self.defaults},
            )
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if not self.supports_complex and any(p.is_complex() for p in params):
                raise NotImplementedError(
                    f"optimlib.{type(self).__name__} does not support complex parameters; "
                    "optimize torch.view_as_real(param) instead, or use torch.optim"
                )
            grads = [p.grad for p in params]
            foreach = use_foreach(group.get("foreach"), params, grads)
            self.update_group(group, params, grads, foreach=foreach)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint, keeping scalar state in its own dtype.

        ``torch.optim.Optimizer.load_state_dict`` casts every floating-point
        state tensor except ``step`` to its parameter's dtype; scalar state that
        runs in float32 is cast back, so a resumed run continues bit for bit.
        """
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for key in self.scalar_state_keys:
                if isinstance(state.get(key), Tensor):
                    state[key] = state[key].to(scalar_dtype())

    def states(
        self, params: list[Tensor], initial: Callable[[Tensor], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Each parameter's state, created by ``initial(param)`` the first time it is needed."""
        states = []
        for param in params:
            state = self.state[param]
            if not state:
                state.update(initial(param))
            states.append(state)
        return states

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        """Update the ``params`` of one group (those with a gradient) in place."""
        raise NotImplementedError
