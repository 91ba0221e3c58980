"""The plotting helpers draw what they are given (checked on artists, not pixels)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet

import optimlib
from optimlib.book import follow
from optimlib.book.functions import Quadratic, Rosenbrock
from optimlib.book.plotting import plot_contours, plot_losses, plot_lr_range
from optimlib.lr_range import LRRangeResult


def _lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_contours_show_level_sets_minimum_and_each_path():
    bowl = Quadratic.with_condition_number(10.0)
    slow = follow(bowl, lambda p: optimlib.SGD(p, lr=0.02), [1.5, 1.0], 10)
    fast = follow(bowl, lambda p: optimlib.SGD(p, lr=0.15), [1.5, 1.0], 10)
    ax = plot_contours(bowl, {"lr 0.02": slow, "lr 0.15": fast})

    contour_sets = [artist for artist in ax.get_children() if isinstance(artist, ContourSet)]
    assert len(contour_sets) == 1
    assert len(contour_sets[0].levels) == 20

    lines = _lines_by_label(ax)
    np.testing.assert_allclose(lines["lr 0.02"].get_xydata(), slow.points.numpy())
    np.testing.assert_allclose(lines["lr 0.15"].get_xydata(), fast.points.numpy())
    np.testing.assert_allclose(lines["minimum"].get_xydata(), [[0.0, 0.0]])
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:3] == ["minimum", "lr 0.02", "lr 0.15"]
    assert ax.get_xlim() == bowl.bounds[0] and ax.get_ylim() == bowl.bounds[1]


def test_contour_levels_follow_the_scale_choice():
    rosenbrock = Rosenbrock()
    geometric = plot_contours(rosenbrock, log_scale=True, levels=10)
    linear = plot_contours(rosenbrock, log_scale=False, levels=10, ax=plt.figure().add_subplot())

    def levels(ax):
        (contour,) = [a for a in ax.get_children() if isinstance(a, ContourSet)]
        return np.asarray(contour.levels)

    ratios = np.diff(np.log(levels(geometric) - rosenbrock.minimum_value))
    np.testing.assert_allclose(ratios, ratios[0])
    np.testing.assert_allclose(np.diff(levels(linear)), np.diff(levels(linear))[0])


def test_contours_accept_raw_point_arrays_and_custom_bounds():
    ax = plot_contours(
        Rosenbrock(), {"path": [[0.0, 0.0], [0.5, 0.25]]}, bounds=((-1.0, 1.0), (-0.5, 1.5))
    )
    np.testing.assert_allclose(_lines_by_label(ax)["path"].get_xydata(), [[0, 0], [0.5, 0.25]])
    assert ax.get_xlim() == (-1.0, 1.0)


def test_contours_reject_other_dimensions():
    with pytest.raises(ValueError, match="dim 2"):
        plot_contours(Quadratic(torch.eye(3)))


def test_loss_curves_plot_each_curve_and_stop_at_divergence():
    bowl = Quadratic.with_condition_number(10.0)
    converging = follow(bowl, lambda p: optimlib.SGD(p, lr=0.1), [1.0, 1.0], 20)
    curves = {"converges": converging, "diverges": [1.0, 10.0, 100.0, math.inf, math.nan]}
    ax = plot_losses(curves)
    lines = _lines_by_label(ax)
    np.testing.assert_allclose(lines["converges"].get_ydata(), converging.losses.numpy())
    np.testing.assert_allclose(lines["converges"].get_xdata(), np.arange(21))
    np.testing.assert_allclose(lines["diverges"].get_ydata(), [1.0, 10.0, 100.0])
    assert ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("step", "loss")


def test_loss_curves_subtract_the_optimum_and_can_stay_linear():
    ax = plot_losses(
        {"run": torch.tensor([3.0, 2.5, 2.25])}, subtract=2.0, log_scale=False, xlabel="epoch"
    )
    np.testing.assert_allclose(_lines_by_label(ax)["run"].get_ydata(), [1.0, 0.5, 0.25])
    assert ax.get_yscale() == "linear" and ax.get_xlabel() == "epoch"


def test_loss_curves_accept_their_own_horizontal_positions():
    ax = plot_losses({"a": [4.0, 2.0, 1.0], "b": [3.0, 1.0]}, x_values={"a": [0, 5, 12]})
    lines = _lines_by_label(ax)
    np.testing.assert_allclose(lines["a"].get_xdata(), [0, 5, 12])
    np.testing.assert_allclose(lines["b"].get_xdata(), [0, 1])
    with pytest.raises(ValueError, match="2 positions for 3 values"):
        plot_losses({"a": [4.0, 2.0, 1.0]}, x_values={"a": [0, 1]})


def test_schedules_are_drawn_side_by_side_with_their_values():
    from optimlib.lr_scheduler import StepLR, learning_rates

    schedules = {
        "step": lambda opt: StepLR(opt, step_size=2, gamma=0.5),
        "constant": lambda opt: StepLR(opt, step_size=100),
    }
    ax = optimlib.book.plotting.plot_schedules(schedules, steps=5, lr=0.2)
    lines = _lines_by_label(ax)
    np.testing.assert_allclose(lines["step"].get_ydata(), [0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    np.testing.assert_allclose(lines["constant"].get_ydata(), [0.2] * 6)
    assert learning_rates(schedules["step"], 5, lr=0.2)[-1] == 0.05
    assert ax.get_ylabel() == "learning rate" and ax.get_yscale() == "linear"


def test_lr_range_plot_shows_raw_smoothed_and_the_suggestion():
    lrs = [1e-4 * 10 ** (k / 4) for k in range(13)]
    losses = [2.3, 2.3, 2.2, 2.0, 1.7, 1.3, 1.0, 0.9, 0.85, 0.9, 1.4, 4.0, 50.0]
    smoothed = [2.3, 2.3, 2.25, 2.1, 1.9, 1.6, 1.3, 1.1, 1.0, 0.98, 1.1, 2.0, 9.0]
    result = LRRangeResult(lrs, losses, smoothed, True, lrs[9], lrs[5], lrs[9] / 10)
    ax = plot_lr_range(result)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert ax.get_xscale() == "log"
    assert list(lines["batch loss"].get_ydata()) == losses
    assert list(lines["smoothed loss"].get_ydata()) == smoothed
    (suggested,) = [label for label in lines if label.startswith("suggested")]
    assert list(lines[suggested].get_xdata()) == [lrs[9] / 10] * 2
    assert ax.get_ylim()[1] < 50.0  # the diverging tail does not set the scale
