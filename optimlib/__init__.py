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

# "X as X" marks each name as a public re-export for type checkers (PEP 484),
# so that adding an optimizer adds one line here.
from optimlib import (
    lr_scheduler as lr_scheduler,
    optimizer as optimizer,
    swa_utils as swa_utils,
    testing as testing,
)
from optimlib.adadelta import Adadelta as Adadelta
from optimlib.adafactor import Adafactor as Adafactor
from optimlib.adagrad import Adagrad as Adagrad
from optimlib.adam import Adam as Adam, AdamW as AdamW
from optimlib.adamax import Adamax as Adamax
from optimlib.asgd import ASGD as ASGD
from optimlib.device import available_devices as available_devices, default_device as default_device
from optimlib.lbfgs import LBFGS as LBFGS
from optimlib.lion import Lion as Lion
from optimlib.muon import (
    Muon as Muon,
    MuonAndAdamW as MuonAndAdamW,
    muon_and_adamw as muon_and_adamw,
)
from optimlib.nadam import NAdam as NAdam
from optimlib.radam import RAdam as RAdam
from optimlib.random_scale_sgd import RandomScaleSGD as RandomScaleSGD
from optimlib.rmsprop import RMSprop as RMSprop
from optimlib.rprop import Rprop as Rprop
from optimlib.schedule_free import ScheduleFreeAdamW as ScheduleFreeAdamW
from optimlib.sgd import SGD as SGD
from optimlib.sparse_adam import SparseAdam as SparseAdam

__version__ = "0.1.0"
