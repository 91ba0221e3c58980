"""optimlib.book.follow records the path an optimizer takes."""

from __future__ import annotations

import pytest
import torch

import optimlib
from optimlib.book import follow
from optimlib.book.functions import Quadratic, Rosenbrock


def test_path_matches_the_closed_form_of_gradient_descent_on_a_quadratic(device):
    # On f(x) = x^T diag(1, 10) x / 2, each step multiplies coordinate i by (1 - lr * lambda_i).
    bowl = Quadratic(torch.diag(torch.tensor([1.0, 10.0])))
    lr, steps = 0.05, 30
    path = follow(bowl, lambda p: optimlib.SGD(p, lr=lr), [1.0, 1.0], steps, device=device)
    assert path.points.shape == (steps + 1, 2) and path.losses.shape == (steps + 1,)
    factors = torch.tensor([1 - lr * 1.0, 1 - lr * 10.0], dtype=torch.float64)
    expected = factors.unsqueeze(0) ** torch.arange(steps + 1).unsqueeze(1)
    torch.testing.assert_close(path.points, expected)
    torch.testing.assert_close(path.losses, bowl(expected))
    assert path.points.device.type == "cpu"


def test_divergence_is_reported():
    bowl = Quadratic.with_condition_number(10.0)
    too_large = 2.5 / bowl.smoothness
    path = follow(bowl, lambda p: optimlib.SGD(p, lr=too_large), [1.0, 1.0], 2000)
    assert path.diverged
    safe = follow(bowl, lambda p: optimlib.SGD(p, lr=0.1), [1.0, 1.0], 50)
    assert not safe.diverged
    assert safe.final_loss < 1e-3 * bowl(torch.ones(2, dtype=torch.float64)).item()


def test_works_with_torch_optimizers_too():
    rosenbrock = Rosenbrock()
    ours = follow(rosenbrock, lambda p: optimlib.SGD(p, lr=1e-3), [-1.0, 1.0], 40)
    theirs = follow(rosenbrock, lambda p: torch.optim.SGD(p, lr=1e-3), [-1.0, 1.0], 40)
    torch.testing.assert_close(ours.points, theirs.points, rtol=0, atol=0)


def test_negative_steps_raise():
    with pytest.raises(ValueError, match="Invalid steps"):
        follow(Rosenbrock(), lambda p: optimlib.SGD(p), [0.0, 0.0], -1)
