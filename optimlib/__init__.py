"""optimlib: the optimizers of *Optimizers from Scratch*.

Every optimizer is a from-scratch subclass of :class:`torch.optim.Optimizer`
that matches its ``torch.optim`` twin number for number, so it can be dropped
into existing training code. The package also carries the book's helpers:
objective functions to optimize, plotting, and device selection.
"""

from optimlib import functions, optimizer, plotting
from optimlib.device import available_devices, default_device
from optimlib.sgd import SGD
from optimlib.trajectory import Trajectory, follow

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Trajectory",
    "__version__",
    "available_devices",
    "default_device",
    "follow",
    "functions",
    "optimizer",
    "plotting",
]
