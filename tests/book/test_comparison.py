"""optimlib.book.compare_optimizers, the parity check of the chapters."""

from __future__ import annotations

import pytest
import torch

import optimlib
from optimlib.book import compare_optimizers
from optimlib.book.functions import Rosenbrock


def test_compare_optimizers_measures_differences_and_refuses_divergence():
    rosenbrock = Rosenbrock()
    same = compare_optimizers(
        rosenbrock,
        optimlib.SGD,
        torch.optim.SGD,
        [{"lr": 1e-3}, {"lr": 1e-3, "momentum": 0.9}],
        [-1.5, 2.0],
        50,
    )
    assert same == 0.0
    differ = compare_optimizers(
        rosenbrock, optimlib.SGD, optimlib.Adam, [{"lr": 1e-3}], [-1.5, 2.0], 50, foreach=(None,)
    )
    assert differ > 1e-3
    with pytest.raises(AssertionError, match="diverged"):
        compare_optimizers(
            rosenbrock, optimlib.SGD, torch.optim.SGD, [{"lr": 0.1}], [-1.5, 2.0], 50
        )
