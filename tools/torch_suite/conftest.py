"""Run PyTorch's own optimizer suite (``TestOptimRenewed``) with optimlib's classes.

Put PyTorch's ``test/test_optim.py`` next to this file (see README.md) and run
pytest there. With ``OPTIMLIB_SWAP=1`` every entry of ``optim_db`` whose class
optimlib also has (Adam, SGD, LBFGS, Muon, SparseAdam...) gets optimlib's class,
before the tests are collected; the parametrised tests read their classes
from those entries. Three tests name torch's classes directly (``SGD`` imported
at the top of the module, ``torch.optim.AdamW`` and ``torch.optim.LBFGS``):
after collection the test module's own ``SGD`` and ``torch`` are rebound, the
second to a stand-in whose ``optim.X`` is optimlib's ``X``. torch.optim itself
is left alone. Without the variable, the suite runs against torch.optim.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any

import pytest
import torch
from torch.testing._internal import common_optimizers

import optimlib

SWAP = os.environ.get("OPTIMLIB_SWAP", "") not in ("", "0")
#: optimlib's classes that have a torch.optim class of the same name.
TWINS = {
    name: value
    for name, value in vars(optimlib).items()
    if inspect.isclass(value) and inspect.isclass(getattr(torch.optim, name, None))
}
swapped: list[str] = []

if SWAP:
    for info in common_optimizers.optim_db:
        if info.optim_cls.__name__ in TWINS:
            swapped.append(info.optim_cls.__name__)
            info.optim_cls = TWINS[info.optim_cls.__name__]


class _Optim(types.ModuleType):
    """``torch.optim`` with optimlib's classes where optimlib has them."""

    def __getattr__(self, name: str) -> Any:
        return TWINS.get(name) or getattr(torch.optim, name)


class _Torch(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        return _OPTIM if name == "optim" else getattr(torch, name)


_OPTIM, _TORCH = _Optim("torch.optim"), _Torch("torch")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not SWAP:
        return
    modules = {id(item.module): item.module for item in items if getattr(item, "module", None)}
    for module in modules.values():
        for name, value in list(vars(module).items()):
            if value is torch:
                setattr(module, name, _TORCH)
            elif (
                inspect.isclass(value)
                and TWINS.get(value.__name__)
                and (getattr(torch.optim, value.__name__, None) is value)
            ):
                setattr(module, name, TWINS[value.__name__])


def pytest_report_header() -> str:
    if not SWAP:
        return "TestOptimRenewed against torch.optim (OPTIMLIB_SWAP not set)"
    return f"TestOptimRenewed with optimlib's classes: {', '.join(sorted(set(swapped)))}"
