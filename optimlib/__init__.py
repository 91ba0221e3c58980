"""optimlib: the optimizers of *Optimizers from Scratch*.

Every optimizer is a from-scratch subclass of :class:`torch.optim.Optimizer`
that matches its ``torch.optim`` twin number for number, so it can be dropped
into existing training code. With them come the learning-rate schedulers
(:mod:`optimlib.lr_scheduler`), a test kit for optimizers of your own
(:mod:`optimlib.testing`) and device selection. All of it needs torch alone.

The book's helpers (objective functions, trajectories, plots, teaching
optimizers) live apart, in :mod:`optimlib.book`, which this package never
imports.
"""

from optimlib import lr_scheduler, optimizer, testing
from optimlib.adadelta import Adadelta
from optimlib.adagrad import Adagrad
from optimlib.adam import Adam, AdamW
from optimlib.adamax import Adamax
from optimlib.asgd import ASGD
from optimlib.device import available_devices, default_device
from optimlib.lbfgs import LBFGS
from optimlib.lion import Lion
from optimlib.nadam import NAdam
from optimlib.radam import RAdam
from optimlib.random_scale_sgd import RandomScaleSGD
from optimlib.rmsprop import RMSprop
from optimlib.rprop import Rprop
from optimlib.sgd import SGD

__version__ = "0.1.0"

__all__ = [
    "ASGD",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "NAdam",
    "RAdam",
    "RMSprop",
    "RandomScaleSGD",
    "Rprop",
    "__version__",
    "available_devices",
    "default_device",
    "lr_scheduler",
    "optimizer",
    "testing",
]
