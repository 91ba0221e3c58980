"""One table entry per optimlib algorithm: what to compare it with, and how.

Modelled on ``OptimizerInfo`` in PyTorch's ``common_optimizers.py``: each entry
lists the constructor configurations every generic test in
``test_conformance.py`` runs over, the options a second parameter group
overrides, and the bad arguments that must raise. A new algorithm adds an
entry here and gets the whole suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import optimlib


@dataclass(frozen=True)
class OptimizerInfo:
    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    #: Constructor keyword arguments; every generic test runs over each of them.
    configs: tuple[dict[str, Any], ...]
    #: Options the second parameter group sets for itself.
    group_overrides: dict[str, Any] = field(default_factory=dict)
    #: (kwargs, exception type, regex the message must match).
    bad_arguments: tuple[tuple[dict[str, Any], type[Exception], str], ...] = ()
    supports_sparse: bool = False
    #: torch options optimlib refuses at non-default values.
    unimplemented: tuple[str, ...] = ("fused", "differentiable")
    #: Float64 comparison tolerance; parity is exact in practice, this absorbs
    #: a fused multiply-add that a GPU kernel may use and another may not.
    rtol: float = 1e-12
    atol: float = 1e-14

    @property
    def name(self) -> str:
        return self.ours.__name__

    def config_params(self) -> list:
        """``pytest.param`` per configuration, with readable ids."""
        return [
            pytest.param(self, config, id=f"{self.name}-{describe(config)}")
            for config in self.configs
        ]


def describe(config: dict[str, Any]) -> str:
    parts = []
    for key, value in config.items():
        if isinstance(value, torch.Tensor):
            value = f"tensor({value.item():g})"
        parts.append(f"{key}={value}")
    return ",".join(parts) or "defaults"


SGD_INFO = OptimizerInfo(
    ours=optimlib.SGD,
    theirs=torch.optim.SGD,
    configs=(
        {"lr": 0.01},
        {"lr": 0.02, "maximize": True},
        {"lr": 0.01, "momentum": 0.9},
        {"lr": 0.01, "momentum": 0.9, "dampening": 0.5},
        {"lr": 0.01, "momentum": 0.9, "nesterov": True},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "momentum": 0.6, "weight_decay": 0.1, "nesterov": True, "maximize": True},
        {"lr": torch.tensor(0.01), "momentum": 0.8},
    ),
    group_overrides={"lr": 0.005, "weight_decay": 0.05},
    bad_arguments=(
        ({"lr": -0.1}, ValueError, r"Invalid lr: -0\.1 \(must be in \[0, inf\)\)"),
        ({"lr": float("nan")}, ValueError, r"Invalid lr: nan"),
        ({"lr": "fast"}, TypeError, r"Invalid lr: expected a number, got str"),
        ({"lr": torch.tensor([0.1, 0.2])}, ValueError, r"Invalid lr: a tensor lr must have"),
        ({"momentum": -0.9}, ValueError, r"Invalid momentum: -0\.9 \(must be in \[0, inf\)\)"),
        ({"weight_decay": -1e-4}, ValueError, r"Invalid weight_decay: -0\.0001"),
        ({"dampening": float("nan")}, ValueError, r"Invalid dampening: nan"),
        ({"nesterov": True}, ValueError, r"Nesterov momentum needs momentum > 0"),
        (
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            ValueError,
            r"needs momentum > 0 and dampening = 0",
        ),
        ({"nesterov": "yes", "momentum": 0.9}, TypeError, r"Invalid nesterov: 'yes'"),
        ({"foreach": "sometimes"}, TypeError, r"Invalid foreach: 'sometimes'"),
    ),
    supports_sparse=True,
)

OPTIMIZERS = (SGD_INFO,)


def all_configs() -> list:
    return [param for info in OPTIMIZERS for param in info.config_params()]


def one_config_each() -> list:
    """The richest configuration of each algorithm, for the slow tests."""
    return [pytest.param(info, max(info.configs, key=len), id=info.name) for info in OPTIMIZERS]
