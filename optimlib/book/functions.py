r"""Objective functions for watching optimizers at work.

Every objective maps a batch of points of shape ``(..., dim)`` to values of
shape ``(...)``, so the same object evaluates one iterate or a whole plotting
grid. Each also knows its gradient in closed form (the tests check it against
autograd), where its minimum lies, and a box that frames it well in a plot.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Objective(ABC):
    """A differentiable function of points in :math:`\\mathbb{R}^{dim}`."""

    #: Points that minimise the objective, one per row.
    minima: Tensor
    #: ``((x_low, x_high), (y_low, y_high))``: a box for two-dimensional plots.
    bounds: tuple[tuple[float, float], tuple[float, float]]

    @property
    def dim(self) -> int:
        return self.minima.shape[-1]

    @abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """Value at each point of ``x`` (shape ``(..., dim)`` to ``(...)``)."""

    @abstractmethod
    def gradient(self, x: Tensor) -> Tensor:
        """Closed-form gradient at each point of ``x`` (same shape as ``x``)."""

    @property
    def minimum_value(self) -> float:
        return float(self(self.minima[0]))


class Quadratic(Objective):
    r"""A convex quadratic bowl.

    .. math::

        f(x) = \tfrac12 (x - x^\star)^\top A (x - x^\star),
        \qquad \nabla f(x) = A (x - x^\star),

    with :math:`A` symmetric positive definite. Its eigenvalues
    :math:`\mu = \lambda_{\min}` and :math:`L = \lambda_{\max}` set the
    strong convexity, the smoothness (the gradient is :math:`L`-Lipschitz) and
    the condition number :math:`\kappa = L / \mu`.

    Args:
        matrix: the symmetric positive-definite matrix :math:`A`.
        center: the minimiser :math:`x^\star` (zeros by default).
    """

    def __init__(self, matrix: Tensor, center: Tensor | None = None) -> None:
        matrix = torch.as_tensor(matrix, dtype=torch.float64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"Invalid matrix: expected a square matrix, got shape {tuple(matrix.shape)}"
            )
        if not torch.allclose(matrix, matrix.T):
            raise ValueError("Invalid matrix: a quadratic's matrix must be symmetric")
        eigenvalues = torch.linalg.eigvalsh(matrix)
        if eigenvalues[0] <= 0:
            raise ValueError(
                f"Invalid matrix: smallest eigenvalue {eigenvalues[0].item():.3g} (must be > 0)"
            )
        self.matrix = matrix
        self.eigenvalues = eigenvalues
        center = torch.zeros(matrix.shape[0], dtype=torch.float64) if center is None else center
        self.minima = torch.as_tensor(center, dtype=torch.float64).reshape(1, -1)
        self.bounds = self._frame()

    @classmethod
    def with_condition_number(
        cls, condition_number: float, *, smallest: float = 1.0, angle: float = 0.0
    ) -> Quadratic:
        r"""A 2-D bowl, eigenvalues ``smallest`` and ``smallest * condition_number``.

        ``angle`` (radians) rotates the axes of the ellipses, so that the
        steep direction need not line up with a coordinate axis.
        """
        if condition_number < 1:
            raise ValueError(f"Invalid condition_number: {condition_number} (must be >= 1)")
        if smallest <= 0:
            raise ValueError(f"Invalid smallest: {smallest} (must be > 0)")
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
        scales = torch.tensor([smallest, smallest * condition_number], dtype=torch.float64)
        matrix = rotation @ torch.diag(scales) @ rotation.T
        return cls((matrix + matrix.T) / 2)

    @property
    def smoothness(self) -> float:
        """:math:`L`, the largest eigenvalue."""
        return float(self.eigenvalues[-1])

    @property
    def strong_convexity(self) -> float:
        r""":math:`\mu`, the smallest eigenvalue."""
        return float(self.eigenvalues[0])

    @property
    def condition_number(self) -> float:
        r""":math:`\kappa = L / \mu`."""
        return self.smoothness / self.strong_convexity

    def __call__(self, x: Tensor) -> Tensor:
        offset = x - self.minima[0].to(x)
        return 0.5 * ((offset @ self.matrix.to(x)) * offset).sum(-1)

    def gradient(self, x: Tensor) -> Tensor:
        return (x - self.minima[0].to(x)) @ self.matrix.to(x)

    def _frame(self) -> tuple[tuple[float, float], tuple[float, float]]:
        center = self.minima[0].tolist()
        if len(center) != 2:
            return ((-1.0, 1.0), (-1.0, 1.0))
        return ((center[0] - 2.0, center[0] + 2.0), (center[1] - 2.0, center[1] + 2.0))

    def __repr__(self) -> str:
        return f"Quadratic(eigenvalues={self.eigenvalues.tolist()})"


class Rosenbrock(Objective):
    r"""Rosenbrock's banana-shaped valley (Rosenbrock, 1960).

    .. math::

        f(x, y) = (a - x)^2 + b\,(y - x^2)^2,

    minimised at :math:`(a, a^2)`. The valley floor is easy to reach and hard
    to follow: the curvature across it is about :math:`b` times the curvature
    along it.
    """

    def __init__(self, a: float = 1.0, b: float = 100.0) -> None:
        self.a, self.b = a, b
        self.minima = torch.tensor([[a, a * a]], dtype=torch.float64)
        self.bounds = ((-2.0, 2.0), (-1.0, 3.0))

    def __call__(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return (self.a - u) ** 2 + self.b * (v - u**2) ** 2

    def gradient(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        valley = v - u**2
        du = -2 * (self.a - u) - 4 * self.b * u * valley
        dv = 2 * self.b * valley
        return torch.stack([du, dv], dim=-1)

    def __repr__(self) -> str:
        return f"Rosenbrock(a={self.a}, b={self.b})"


class Himmelblau(Objective):
    r"""Himmelblau's function: four separate minima, all of value zero.

    .. math::

        f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2.

    Which minimum an optimizer reaches depends on where it starts and on its
    step size, so it is a good place to see that non-convex problems have no
    single answer.
    """

    def __init__(self) -> None:
        self.minima = torch.tensor(
            [
                [3.0, 2.0],
                [-2.805118086952745, 3.131312518250573],
                [-3.779310253377747, -3.283185991286170],
                [3.584428340330492, -1.848126526964404],
            ],
            dtype=torch.float64,
        )
        self.bounds = ((-5.0, 5.0), (-5.0, 5.0))

    def __call__(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        return (u**2 + v - 11) ** 2 + (u + v**2 - 7) ** 2

    def gradient(self, x: Tensor) -> Tensor:
        u, v = x[..., 0], x[..., 1]
        first, second = u**2 + v - 11, u + v**2 - 7
        return torch.stack([4 * u * first + 2 * second, 2 * first + 4 * v * second], dim=-1)

    def __repr__(self) -> str:
        return "Himmelblau()"
