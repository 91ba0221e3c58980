"""One table entry per optimlib algorithm: what to compare it with, and how.

Modelled on ``OptimizerInfo`` in PyTorch's ``common_optimizers.py``: each entry
lists the constructor configurations every generic test in
``test_conformance.py`` runs over, the options a second parameter group
overrides, and the bad arguments that must raise. A new algorithm adds an
entry here and gets the whole suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import optimlib
from optimlib.adafactor import Adafactor


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
    #: Options for the sparse-gradient test; ``None`` when sparse gradients are unsupported.
    sparse_config: dict[str, Any] | None = None
    #: torch options optimlib refuses at non-default values.
    unimplemented: tuple[str, ...] = ()
    #: Whether torch.compile captures a step in one graph (fullgraph=True). RAdam,
    #: ASGD and Rprop branch in Python on values read from their state, which
    #: Dynamo handles with a graph break.
    compiles_fullgraph: bool = True
    #: Whether torch.optim takes complex parameters (as real pairs); where it
    #: refuses them (Adafactor), optimlib must refuse them with torch's error.
    supports_complex: bool = True
    #: Whether torch's foreach path agrees with torch's own for-loop for a config.
    #: optimlib's paths are both held to torch's for-loop, the reference; where
    #: torch's two paths differ, its foreach is not used as an oracle.
    torch_foreach_agrees: Callable[[dict[str, Any]], bool] = lambda config: True
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
        ({"lr": -0.1}, ValueError, r"Invalid lr value: -0\.1 \(must be in \[0, inf\)\)"),
        ({"lr": float("nan")}, ValueError, r"Invalid lr value: nan"),
        ({"lr": "fast"}, TypeError, r"Invalid lr: expected a number, got str"),
        ({"lr": torch.tensor([0.1, 0.2])}, ValueError, r"Invalid lr: Tensor lr must be 1-element"),
        (
            {"momentum": -0.9},
            ValueError,
            r"Invalid momentum value: -0\.9 \(must be in \[0, inf\)\)",
        ),
        ({"weight_decay": -1e-4}, ValueError, r"Invalid weight_decay value: -0\.0001"),
        ({"dampening": float("nan")}, ValueError, r"Invalid dampening value: nan"),
        ({"nesterov": True}, ValueError, r"Nesterov momentum needs momentum > 0"),
        (
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            ValueError,
            r"needs momentum > 0 and dampening = 0",
        ),
        ({"nesterov": "yes", "momentum": 0.9}, TypeError, r"Invalid nesterov: 'yes'"),
        ({"foreach": "sometimes"}, TypeError, r"Invalid foreach: 'sometimes'"),
    ),
    sparse_config={"lr": 0.1, "momentum": 0.9, "dampening": 0.1},
)


def _bad_common(extra: tuple = ()) -> tuple:
    """Bad arguments every algorithm with lr and weight_decay must refuse."""
    return (
        ({"lr": -1e-3}, ValueError, r"Invalid lr value: -0\.001 \(must be in \[0, inf\)\)"),
        ({"lr": "big"}, TypeError, r"Invalid lr: expected a number"),
        ({"foreach": "yes"}, TypeError, r"Invalid foreach: 'yes'"),
        ({"maximize": "no"}, TypeError, r"Invalid maximize"),
        *extra,
    )


_WEIGHT_DECAY_BAD = ({"weight_decay": -0.1}, ValueError, r"Invalid weight_decay value: -0\.1")
_EPS_BAD = ({"eps": -1e-8}, ValueError, r"Invalid eps value: -1e-08")
_BETAS_BAD = (
    (
        {"betas": (1.5, 0.999)},
        ValueError,
        r"Invalid beta parameter at index 0: 1\.5 \(must be in \[0, 1\)\)",
    ),
    ({"betas": (0.9, -0.1)}, ValueError, r"Invalid beta parameter at index 1: -0\.1"),
    ({"betas": (0.9, 1.0)}, ValueError, r"Invalid beta parameter at index 1: 1\.0"),
    ({"betas": 0.9}, TypeError, r"Invalid betas: expected a pair"),
)

ADAGRAD_INFO = OptimizerInfo(
    ours=optimlib.Adagrad,
    theirs=torch.optim.Adagrad,
    configs=(
        {"lr": 0.1},
        {"lr": 0.1, "lr_decay": 0.05},
        {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6},
        {"lr": 0.1, "weight_decay": 0.1, "maximize": True},
        {"lr": torch.tensor(0.05), "lr_decay": 0.01, "weight_decay": 0.05},
    ),
    group_overrides={"lr": 0.02, "lr_decay": 0.1},
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            _EPS_BAD,
            ({"lr_decay": -1.0}, ValueError, r"Invalid lr_decay value: -1\.0"),
            ({"initial_accumulator_value": -0.1}, ValueError, r"Invalid initial_accumulator_value"),
        )
    ),
    sparse_config={"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
)

RMSPROP_INFO = OptimizerInfo(
    ours=optimlib.RMSprop,
    theirs=torch.optim.RMSprop,
    configs=(
        {"lr": 0.01},
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6},
        {"lr": 0.01, "momentum": 0.9},
        {"lr": 0.01, "centered": True},
        {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
        {"lr": 0.005, "maximize": True, "weight_decay": 0.05},
    ),
    group_overrides={"lr": 0.003, "alpha": 0.95},
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            _EPS_BAD,
            ({"momentum": -0.5}, ValueError, r"Invalid momentum value: -0\.5"),
            ({"alpha": -0.99}, ValueError, r"Invalid alpha value: -0\.99"),
            ({"centered": "yes"}, TypeError, r"Invalid centered: 'yes'"),
            ({"centered": 2}, TypeError, r"Invalid centered: 2"),
        )
    ),
)

ADADELTA_INFO = OptimizerInfo(
    ours=optimlib.Adadelta,
    theirs=torch.optim.Adadelta,
    configs=(
        {},
        {"lr": 0.5, "rho": 0.95, "eps": 1e-5},
        {"weight_decay": 0.1, "maximize": True},
        {"lr": torch.tensor(0.8), "rho": 0.5},
    ),
    group_overrides={"lr": 0.3, "rho": 0.8},
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            _EPS_BAD,
            ({"rho": 1.5}, ValueError, r"Invalid rho value: 1\.5 \(must be in \[0, 1\]\)"),
        )
    ),
)

_ADAM_CONFIGS = (
    {"lr": 0.01},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    {"lr": torch.tensor(0.02), "betas": (0.5, 0.9)},
)

#: torch.optim.Adam's own rules for tensor hyperparameters, in its words.
_ADAM_TENSOR_BAD = (
    (
        {"lr": torch.tensor(0.01), "foreach": True},
        ValueError,
        r"lr as a Tensor is not supported for capturable=False and foreach=True",
    ),
    (
        {"betas": (torch.tensor(0.9), 0.999)},
        ValueError,
        r"betas must be either both floats or both Tensors",
    ),
    (
        {"betas": (torch.tensor(0.9), torch.tensor(0.999)), "foreach": True},
        ValueError,
        r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True",
    ),
)

ADAM_INFO = OptimizerInfo(
    ours=optimlib.Adam,
    theirs=torch.optim.Adam,
    configs=(*_ADAM_CONFIGS, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    group_overrides={"lr": 0.003, "betas": (0.85, 0.995)},
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            _EPS_BAD,
            *_BETAS_BAD,
            ({"amsgrad": "yes"}, TypeError, r"Invalid amsgrad"),
            *_ADAM_TENSOR_BAD,
        )
    ),
)

ADAMW_INFO = OptimizerInfo(
    ours=optimlib.AdamW,
    theirs=torch.optim.AdamW,
    configs=(*_ADAM_CONFIGS, {"lr": 0.01, "weight_decay": 0.5}),
    group_overrides={"lr": 0.003, "weight_decay": 0.2},
    bad_arguments=_bad_common((_WEIGHT_DECAY_BAD, _EPS_BAD, *_BETAS_BAD, *_ADAM_TENSOR_BAD)),
)

ADAMAX_INFO = OptimizerInfo(
    ours=optimlib.Adamax,
    theirs=torch.optim.Adamax,
    configs=(
        {},
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
        {"lr": torch.tensor(0.005)},
    ),
    group_overrides={"lr": 0.004, "betas": (0.85, 0.995)},
    bad_arguments=_bad_common((_WEIGHT_DECAY_BAD, _EPS_BAD, *_BETAS_BAD)),
    torch_foreach_agrees=lambda config: not isinstance(config.get("lr"), torch.Tensor),
)

NADAM_INFO = OptimizerInfo(
    ours=optimlib.NAdam,
    theirs=torch.optim.NAdam,
    configs=(
        {},
        {"lr": 0.01, "betas": (0.8, 0.99), "momentum_decay": 0.01},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        {"lr": torch.tensor(0.005), "eps": 1e-6},
    ),
    group_overrides={"lr": 0.004, "momentum_decay": 0.008},
    torch_foreach_agrees=lambda config: not isinstance(config.get("lr"), torch.Tensor),
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            _EPS_BAD,
            *_BETAS_BAD,
            ({"momentum_decay": -4e-3}, ValueError, r"Invalid momentum_decay"),
        )
    ),
)

RADAM_INFO = OptimizerInfo(
    ours=optimlib.RAdam,
    theirs=torch.optim.RAdam,
    configs=(
        {},
        {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.01, "betas": (0.9, 0.9)},  # rectification starts after a few steps
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        {"lr": torch.tensor(0.005), "eps": 1e-6},
    ),
    group_overrides={"lr": 0.004, "betas": (0.8, 0.9)},
    torch_foreach_agrees=lambda config: not isinstance(config.get("lr"), torch.Tensor),
    bad_arguments=_bad_common((_WEIGHT_DECAY_BAD, _EPS_BAD, *_BETAS_BAD)),
    compiles_fullgraph=False,
)

ASGD_INFO = OptimizerInfo(
    ours=optimlib.ASGD,
    theirs=torch.optim.ASGD,
    configs=(
        {},
        {"lr": 0.02, "t0": 10},
        {"lr": 0.02, "lambd": 0.01, "alpha": 0.5, "t0": 5},
        {"lr": 0.01, "weight_decay": 0.1, "t0": 20, "maximize": True},
        {"lr": torch.tensor(0.01), "t0": 0},
    ),
    group_overrides={"lr": 0.005, "t0": 15},
    # torch's foreach ASGD rearranges the update and computes eta in float32:
    # 7.5e-7 relative from its own for-loop after 60 float64 steps.
    torch_foreach_agrees=lambda config: False,
    bad_arguments=_bad_common(
        (
            _WEIGHT_DECAY_BAD,
            ({"lambd": -1e-4}, ValueError, r"Invalid lambd"),
            ({"alpha": -0.75}, ValueError, r"Invalid alpha"),
            ({"t0": -1}, ValueError, r"Invalid t0"),
        )
    ),
    compiles_fullgraph=False,
)

RPROP_INFO = OptimizerInfo(
    ours=optimlib.Rprop,
    theirs=torch.optim.Rprop,
    configs=(
        {},
        {"lr": 0.05, "etas": (0.3, 1.5)},
        {"lr": 0.01, "step_sizes": (1e-3, 0.05)},
        {"lr": 0.01, "maximize": True},
        {"lr": torch.tensor(0.02)},
    ),
    group_overrides={"lr": 0.005, "etas": (0.4, 1.1)},
    bad_arguments=_bad_common(
        (
            ({"etas": (1.5, 1.2)}, ValueError, r"Invalid eta values: 1\.5, 1\.2 \(must be 0 <"),
            ({"etas": (0.5, 0.9)}, ValueError, r"Invalid eta values: 0\.5, 0\.9"),
            ({"etas": 0.5}, TypeError, r"Invalid etas: expected a pair"),
            ({"step_sizes": (0.1, 0.01)}, ValueError, r"Invalid step_sizes\[1\] \(maximum\)"),
        )
    ),
    compiles_fullgraph=False,
)

ADAFACTOR_INFO = OptimizerInfo(
    ours=Adafactor,
    theirs=torch.optim.Adafactor,
    configs=(
        {},
        {"lr": 0.5},  # the relative step 1/sqrt(t) takes over from step 5 on
        {"beta2_decay": -0.5, "eps": (1e-30, 1e-3), "d": 2.0},
        {"eps": (0.5, 1e-3)},  # epsilon1 large enough to clamp the estimates
        {"eps": (None, 2.0), "d": 10.0},  # epsilon2 above the parameters' RMS
        {"lr": 0.02, "weight_decay": 0.1, "maximize": True},
        {"lr": torch.tensor(0.02), "weight_decay": 0.05, "beta2_decay": 0.0},
    ),
    group_overrides={"lr": 0.05, "beta2_decay": -0.6, "d": 1.5},
    bad_arguments=(
        ({"lr": -1e-3}, ValueError, r"^Learning rate should be >= 0 but is: -0\.001$"),
        ({"lr": float("nan")}, ValueError, r"^Learning rate should be >= 0 but is: nan$"),
        ({"lr": "big"}, TypeError, r"Invalid lr: expected a number, got str"),
        ({"lr": torch.tensor([0.1, 0.2])}, ValueError, r"^Tensor lr must be 1-element$"),
        ({"beta2_decay": 0.5}, ValueError, r"^beta2_decay should be <= 0 but is: 0\.5$"),
        ({"eps": (-1e-30, 1e-3)}, ValueError, r"^epsilon1 should be >= 0 but is: -1e-30$"),
        ({"eps": (None, -1e-3)}, ValueError, r"^epsilon2 should be >= 0 but is: -0\.001$"),
        ({"eps": 1e-3}, TypeError, r"Invalid eps: expected a pair"),
        ({"d": 0.5}, ValueError, r"^Clipping threshold d should be >= 1 but is: 0\.5$"),
        ({"weight_decay": -0.1}, ValueError, r"^weight_decay should be >= 0 but is: -0\.1$"),
        ({"foreach": "yes"}, TypeError, r"Invalid foreach: 'yes'"),
        ({"maximize": "no"}, TypeError, r"Invalid maximize"),
        # torch.optim.Adafactor has neither option (fused=True is optimlib's compiled
        # for-loop, tested in test_compiled_fused.py).
        ({"differentiable": True}, TypeError, r"unexpected keyword argument 'differentiable'"),
    ),
    unimplemented=(),
    supports_complex=False,
)

OPTIMIZERS = (
    SGD_INFO,
    ADAGRAD_INFO,
    RMSPROP_INFO,
    ADADELTA_INFO,
    ADAM_INFO,
    ADAMW_INFO,
    ADAMAX_INFO,
    NADAM_INFO,
    RADAM_INFO,
    ASGD_INFO,
    RPROP_INFO,
    ADAFACTOR_INFO,
)


def all_configs() -> list:
    return [param for info in OPTIMIZERS for param in info.config_params()]


def one_config_each() -> list:
    """The richest configuration of each algorithm, for the slow tests."""
    return [pytest.param(info, max(info.configs, key=len), id=info.name) for info in OPTIMIZERS]
