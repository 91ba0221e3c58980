"""Argument checks shared by every optimizer.

Each check names the argument, shows the value it got and says what is
allowed, so that a user reading the error knows what to change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def check_non_negative(name: str, value: float | torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: a tensor {name} must have one element")
        number = value.item()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise TypeError(f"Invalid {name}: expected a number, got {type(value).__name__}")
    if math.isnan(number) or number < 0 or math.isinf(number):
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")


def check_foreach(value: bool | None) -> None:
    """``foreach`` is ``None`` (choose automatically), ``True`` or ``False``."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Invalid foreach: {value!r} (must be None, True or False)")


def check_params(params: Any) -> list[Any]:
    """Materialise ``params`` and check it holds tensors or parameter-group dicts.

    ``torch.optim.Optimizer`` accepts an iterable of tensors, or an iterable of
    dicts whose ``"params"`` entry is a tensor or an iterable of tensors.
    """
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "Invalid params: expected an iterable of tensors or of parameter-group "
            "dicts, got a single Tensor (wrap it in a list: [tensor])"
        )
    if isinstance(params, dict) or not isinstance(params, Iterable):
        raise TypeError(
            "Invalid params: expected an iterable of tensors or of parameter-group "
            f"dicts, got {type(params).__name__}"
        )
    params = list(params)
    if not params:
        raise ValueError("Invalid params: the optimizer got an empty parameter list")
    for index, entry in enumerate(params):
        if isinstance(entry, dict):
            if "params" not in entry:
                raise ValueError(f"Invalid params: parameter group {index} has no 'params' key")
            tensors = entry["params"]
            tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
            located = [
                (f"element {position} of parameter group {index}", tensor)
                for position, tensor in enumerate(tensors)
            ]
        else:
            located = [(f"element {index} of params", entry)]
        for where, tensor in located:
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"Invalid params: {where} is a {type(tensor).__name__}, but an optimizer "
                    "can only update torch.Tensor objects (pass model.parameters() or a list "
                    "of tensors)"
                )
    return params
