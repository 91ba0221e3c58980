"""The book's helpers: what the chapters of *Optimizers from Scratch* use besides optimlib.

Objective functions to optimize (:mod:`~optimlib.book.functions`), runs recorded
as trajectories (:mod:`~optimlib.book.trajectory`), plots
(:mod:`~optimlib.book.plotting`), the teaching optimizers of Chapters 2 and 7
(:mod:`~optimlib.book.teaching`), the parity check the chapters run against
``torch.optim`` (:mod:`~optimlib.book.comparison`), and CIFAR-10 with its
offline stand-in (:mod:`~optimlib.book.data`).

The plots need matplotlib and numpy, installed with the ``book`` extra::

    pip install "optimizers-from-scratch[book]"

The library proper (``optimlib`` without ``.book``) never imports this package.
"""

from optimlib.book import comparison, functions, teaching, trajectory
from optimlib.book.comparison import compare_optimizers
from optimlib.book.trajectory import Trajectory, follow

__all__ = [
    "Trajectory",
    "compare_optimizers",
    "comparison",
    "follow",
    "functions",
    "teaching",
    "trajectory",
]
