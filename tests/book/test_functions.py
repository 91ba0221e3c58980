"""The objectives' closed-form gradients agree with autograd."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from optimlib.book.functions import Himmelblau, Quadratic, Rosenbrock

OBJECTIVES = [
    Quadratic.with_condition_number(10.0),
    Quadratic.with_condition_number(50.0, smallest=0.5, angle=0.6),
    Quadratic(
        torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]]),
        center=torch.tensor([1.0, -1.0, 0.5]),
    ),
    Rosenbrock(),
    Rosenbrock(a=2.0, b=10.0),
    Himmelblau(),
]

coordinates = st.floats(min_value=-4, max_value=4, allow_nan=False)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_gradient_matches_autograd(objective, data):
    point = torch.tensor(
        data.draw(st.lists(coordinates, min_size=objective.dim, max_size=objective.dim)),
        dtype=torch.float64,
        requires_grad=True,
    )
    (autograd_gradient,) = torch.autograd.grad(objective(point), point)
    torch.testing.assert_close(objective.gradient(point.detach()), autograd_gradient)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_gradient_vanishes_at_every_minimum(objective):
    for minimum in objective.minima:
        torch.testing.assert_close(
            objective.gradient(minimum), torch.zeros_like(minimum), atol=1e-9, rtol=0
        )


@pytest.mark.parametrize("objective", OBJECTIVES, ids=repr)
def test_evaluates_a_batch_of_points_like_single_points(objective):
    points = torch.randn(4, 3, objective.dim, dtype=torch.float64)
    batch = objective(points)
    assert batch.shape == (4, 3)
    torch.testing.assert_close(batch[2, 1], objective(points[2, 1]))
    torch.testing.assert_close(objective.gradient(points)[1, 2], objective.gradient(points[1, 2]))


def test_quadratic_condition_number_and_eigenvalues():
    bowl = Quadratic.with_condition_number(25.0, smallest=2.0, angle=math.pi / 5)
    assert bowl.strong_convexity == pytest.approx(2.0)
    assert bowl.smoothness == pytest.approx(50.0)
    assert bowl.condition_number == pytest.approx(25.0)
    # Rotation keeps the spectrum: the value along the steep eigenvector is L/2 * |x|^2.
    steep = torch.tensor([-math.sin(math.pi / 5), math.cos(math.pi / 5)], dtype=torch.float64)
    assert bowl(steep).item() == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: Quadratic.with_condition_number(0.5), "Invalid condition_number"),
        (lambda: Quadratic.with_condition_number(10, smallest=0), "Invalid smallest"),
        (lambda: Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
        (lambda: Quadratic(torch.tensor([[1.0, 0.0], [0.0, -1.0]])), "smallest eigenvalue"),
        (lambda: Quadratic(torch.ones(3)), "square matrix"),
    ],
)
def test_bad_quadratics_raise(factory, fragment):
    with pytest.raises(ValueError, match=fragment):
        factory()


def test_himmelblau_minima_are_zero():
    values = Himmelblau()(Himmelblau().minima)
    torch.testing.assert_close(values, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
