"""The book's figures: level sets with optimizer paths, and loss curves.

Each helper draws on a Matplotlib ``Axes`` (a new one when none is given) and
returns it, so a notebook can place several panels side by side and tests can
inspect what was drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor
from torch.optim import Optimizer

from optimlib.book.functions import Objective
from optimlib.book.trajectory import Trajectory
from optimlib.lr_range import LRRangeResult

Curve = Sequence[float] | Tensor | np.ndarray


def _as_numpy(values: Curve | Trajectory) -> np.ndarray:
    if isinstance(values, Trajectory):
        values = values.points
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def plot_contours(
    objective: Objective,
    paths: Mapping[str, Trajectory | Curve] | None = None,
    *,
    ax: Axes | None = None,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
    resolution: int = 200,
    levels: int = 20,
    log_scale: bool = True,
    markers: bool = True,
) -> Axes:
    """Draw the level sets of a two-dimensional objective and optimizer paths on them.

    Args:
        objective: the function to draw; its ``bounds`` frame the plot unless
            ``bounds`` is given.
        paths: label -> trajectory (or an ``(n, 2)`` array of points); each is
            drawn as a line from a round start marker.
        log_scale: space the contour levels geometrically, which suits
            objectives that range over many orders of magnitude.
        markers: mark every iterate, not just the start.
    """
    if objective.dim != 2:
        raise ValueError(f"Invalid objective: contour plots need dim 2, got {objective.dim}")
    ax = ax if ax is not None else plt.figure().add_subplot()
    (x_low, x_high), (y_low, y_high) = bounds if bounds is not None else objective.bounds
    xs = torch.linspace(x_low, x_high, resolution, dtype=torch.float64)
    ys = torch.linspace(y_low, y_high, resolution, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(xs, ys, indexing="xy")
    values = objective(torch.stack([grid_x, grid_y], dim=-1)).numpy()
    if log_scale:
        floor = objective.minimum_value
        span = values - floor
        positive = span[span > 0]
        top = positive.max()
        level_values = floor + np.geomspace(max(positive.min(), top * 1e-9), top, levels)
    else:
        level_values = np.linspace(values.min(), values.max(), levels)
    ax.contour(
        grid_x.numpy(), grid_y.numpy(), values, levels=level_values, cmap="viridis", linewidths=0.8
    )
    minima = objective.minima.numpy()
    ax.plot(
        minima[:, 0],
        minima[:, 1],
        linestyle="none",
        marker="*",
        markersize=14,
        color="black",
        label="minimum",
    )
    for label, path in (paths or {}).items():
        points = _as_numpy(path)
        (line,) = ax.plot(
            points[:, 0],
            points[:, 1],
            marker="." if markers else None,
            markersize=4,
            linewidth=1.4,
            label=label,
        )
        ax.plot(points[0, 0], points[0, 1], marker="o", color=line.get_color(), linestyle="none")
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_losses(
    curves: Mapping[str, Trajectory | Curve],
    *,
    ax: Axes | None = None,
    log_scale: bool = True,
    subtract: float = 0.0,
    xlabel: str = "step",
    ylabel: str = "loss",
    x_values: Mapping[str, Curve] | None = None,
) -> Axes:
    """Draw one loss curve per label against the step number.

    A trajectory contributes its ``losses``. ``subtract`` removes a known
    optimal value first, so that a logarithmic axis shows the gap to the
    optimum; non-finite values (a diverged run) end the curve. ``x_values``
    gives a curve its own horizontal positions (for example, the number of
    loss evaluations so far) instead of 0, 1, 2, ...
    """
    ax = ax if ax is not None else plt.figure().add_subplot()
    for label, curve in curves.items():
        values = _as_numpy(curve.losses if isinstance(curve, Trajectory) else curve) - subtract
        positions = (
            _as_numpy(x_values[label])
            if x_values is not None and label in x_values
            else np.arange(len(values))
        )
        if len(positions) != len(values):
            raise ValueError(
                f"Invalid x_values[{label!r}]: {len(positions)} positions for {len(values)} values"
            )
        finite = np.isfinite(values)
        end = len(values) if finite.all() else int(np.argmin(finite))
        ax.plot(positions[:end], values[:end], label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_schedules(
    schedules: Mapping[str, Callable[[Optimizer], Any]],
    steps: int,
    *,
    lr: float = 0.1,
    ax: Axes | None = None,
    log_scale: bool = False,
) -> Axes:
    """Draw the learning rate of several schedules side by side, over ``steps`` steps.

    ``schedules`` maps a label to a function that builds the scheduler around an
    optimizer (for example ``lambda opt: StepLR(opt, step_size=30)``); see
    :func:`optimlib.lr_scheduler.learning_rates`.
    """
    from optimlib.lr_scheduler import learning_rates

    curves = {label: learning_rates(make, steps, lr) for label, make in schedules.items()}
    return plot_losses(curves, ax=ax, log_scale=log_scale, ylabel="learning rate")


def plot_lr_range(
    result: LRRangeResult,
    ax: Axes | None = None,
    *,
    log_scale: bool = False,
) -> Axes:
    """Draw an LR range test (:func:`optimlib.lr_range.lr_range_test`) against a log lr axis.

    The per-batch losses are a thin line, their smoothed average a thick one;
    a dashed vertical line marks the suggested lr (a tenth of the lr at the
    smoothed minimum, itself a round marker) and a triangle the steepest
    descent. The loss axis frames the curves up to the smoothed minimum, with
    room above, so that the diverging last batches (which leave through the
    top) do not flatten the rest; ``log_scale`` makes it logarithmic.
    """
    ax = ax if ax is not None else plt.figure().add_subplot()
    lrs = np.asarray(result.lrs, dtype=np.float64)
    losses = np.asarray(result.losses, dtype=np.float64)
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    ax.plot(lrs, losses, color="tab:blue", alpha=0.45, linewidth=1.0, label="batch loss")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2.2, label="smoothed loss")

    def smoothed_at(lr: float) -> float:
        return float(smoothed[int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))])

    points = (
        ("minimum", result.minimum_lr, "o", 8, "tab:red"),
        ("steepest descent", result.steepest_lr, "v", 9, "tab:green"),
    )
    for name, lr, marker, size, color in points:
        ax.plot(
            [lr],
            [smoothed_at(lr)],
            linestyle="none",
            marker=marker,
            markersize=size,
            color=color,
            label=rf"{name}, $\eta$ = {lr:.2g}",
        )
    ax.axvline(
        result.suggested_lr,
        color="tab:red",
        linestyle="--",
        linewidth=1.5,
        label=rf"suggested $\eta$ = {result.suggested_lr:.2g} (minimum / 10)",
    )
    ax.set_xscale("log")
    if log_scale:
        ax.set_yscale("log")
    if np.isfinite(smoothed).any():
        # Frame the curve up to its minimum; the diverging tail leaves through the top.
        lowest = int(np.nanargmin(np.where(np.isfinite(smoothed), smoothed, np.nan)))
        shown = np.concatenate([losses[: lowest + 1], smoothed[: lowest + 1]])
        shown = shown[np.isfinite(shown) & (shown > 0 if log_scale else True)]
        bottom, top = (float(shown.min()), float(shown.max())) if shown.size else (1.0, 1.0)
        if log_scale:
            ax.set_ylim(bottom / 1.3, top * 2.0)
        else:
            span = top - bottom if top > bottom else abs(top) + 1.0
            ax.set_ylim(bottom - 0.05 * span, top + 0.35 * span)
    ax.set_xlabel(r"learning rate $\eta$ (log scale)")
    ax.set_ylabel("loss")
    ax.legend(loc="best", fontsize="small")
    return ax
