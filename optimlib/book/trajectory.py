"""Running an optimizer on an objective and recording where it goes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from optimlib.book.functions import Objective

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Trajectory:
    """The iterates of one run: ``points[k]`` is the point after ``k`` steps."""

    points: Tensor
    losses: Tensor

    @property
    def final_point(self) -> Tensor:
        return self.points[-1]

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    @property
    def diverged(self) -> bool:
        """True when the run ended at a non-finite loss."""
        return not bool(torch.isfinite(self.losses[-1]))


def follow(
    objective: Objective,
    make_optimizer: OptimizerFactory,
    start: Sequence[float] | Tensor,
    steps: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Trajectory:
    """Minimise ``objective`` from ``start`` for ``steps`` steps and record the path.

    ``make_optimizer`` receives the list holding the single parameter (the
    point) and returns any ``torch.optim.Optimizer``: for instance
    ``lambda params: optimlib.SGD(params, lr=0.1)``. Gradients come from
    autograd, so the optimizer sees exactly what it would in training.
    The recorded path lives on the CPU whatever ``device`` the run used.
    """
    if steps < 0:
        raise ValueError(f"Invalid steps: {steps} (must be >= 0)")
    point = torch.tensor(start, dtype=dtype, device=device).clone().requires_grad_(True)
    optimizer = make_optimizer([point])
    points, losses = [point.detach().clone()], []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = objective(point)
        loss.backward()
        return loss

    for _ in range(steps):
        losses.append(optimizer.step(closure).detach())
        points.append(point.detach().clone())
    with torch.no_grad():
        losses.append(objective(point))
    return Trajectory(points=torch.stack(points).cpu(), losses=torch.stack(losses).cpu())
