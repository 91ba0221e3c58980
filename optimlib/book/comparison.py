"""Comparing two optimizers on an objective, as the chapters' parity cells do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from optimlib.book.functions import Objective
from optimlib.book.trajectory import follow


def compare_optimizers(
    objective: Objective,
    ours: type[torch.optim.Optimizer],
    reference: type[torch.optim.Optimizer],
    configurations: Sequence[dict[str, Any]],
    start: Sequence[float],
    steps: int,
    *,
    foreach: Sequence[bool | None] = (False, True),
    reference_foreach: bool | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Largest difference between two optimizers' iterates on ``objective``, in float64.

    Both classes run every configuration from ``start`` for ``steps`` steps, once
    per value in ``foreach`` (``None`` passes no ``foreach`` argument, for
    optimizers without one). The reference uses the same ``foreach`` value unless
    ``reference_foreach`` fixes it (``False``: always its for-loop). A run that
    diverges raises ``AssertionError``: differences between infinities prove
    nothing, so pick settings under which both converge.
    """
    worst = 0.0
    for options in configurations:
        for ours_foreach in foreach:
            theirs_foreach = ours_foreach if reference_foreach is None else reference_foreach
            paths = [
                follow(
                    objective,
                    lambda params, cls=cls, flag=flag, options=options: cls(
                        params, **options, **({} if flag is None else {"foreach": flag})
                    ),
                    start,
                    steps,
                    device=device,
                )
                for cls, flag in ((ours, ours_foreach), (reference, theirs_foreach))
            ]
            if any(path.diverged for path in paths):
                raise AssertionError(
                    f"compare_optimizers: a run diverged with {options} (foreach={ours_foreach}); "
                    "choose a learning rate at which both converge"
                )
            worst = max(worst, (paths[0].points - paths[1].points).abs().max().item())
    return worst
