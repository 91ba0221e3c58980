"""Argument checks shared by every optimizer.

Each check names the argument, shows the value it got and says what is
allowed, so that a user reading the error knows what to change.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"Invalid {name}: Tensor {name} must be 1-element, got {value.numel()} elements"
            )
        return float(value.detach().item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"Invalid {name}: expected a number, got {type(value).__name__}")


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    label: str | None = None,
) -> None:
    """Raise unless ``value`` is a number in the given interval.

    The message reads like ``Invalid momentum value: -0.5 (must be in [0, inf))``,
    which keeps torch.optim's wording (``Invalid momentum value: -0.5``) and adds
    the allowed range; ``label`` replaces ``"<name> value"`` where torch words it
    otherwise (``"beta parameter at index 0"``).
    """
    number = _as_number(name, value)
    above = number >= low if low_inclusive else number > low
    below = number <= high if high_inclusive else number < high
    if math.isnan(number) or not (above and below):
        opening = "[" if low_inclusive and not math.isinf(low) else "("
        closing = "]" if high_inclusive and not math.isinf(high) else ")"
        interval = f"{opening}{_show(low)}, {_show(high)}{closing}"
        raise ValueError(f"Invalid {label or name + ' value'}: {value} (must be in {interval})")


def _show(bound: float) -> str:
    if math.isinf(bound):
        return "inf" if bound > 0 else "-inf"
    return f"{bound:g}"


def check_non_negative(name: str, value: Any) -> None:
    """Raise unless ``value`` is a finite number >= 0."""
    check_range(name, value, 0.0, math.inf, high_inclusive=False)


def check_bool(name: str, value: Any) -> None:
    """A switch: ``True``/``False``, or 0/1 as torch.optim also takes (``amsgrad=0``).

    Anything else is refused: torch would read a string such as ``"False"`` as on.
    """
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return
    if type(value).__name__ == "bool" and type(value).__module__ == "numpy":
        return
    raise TypeError(f"Invalid {name}: {value!r} (must be True or False)")


def check_foreach(value: Any) -> None:
    """``foreach`` is ``None`` (choose automatically), or a switch (see :func:`check_bool`)."""
    if value is not None:
        try:
            check_bool("foreach", value)
        except TypeError:
            raise TypeError(f"Invalid foreach: {value!r} (must be None, True or False)") from None


#: Options of ``torch.optim`` that optimlib accepts only at their "off" value,
#: where an optimizer does not implement them (``fused`` where it has no fused
#: update, ``capturable`` where it lacks ``supports_capturable``).
UNIMPLEMENTED_OPTIONS = {
    "fused": (None, False),
    "capturable": (False, None),
}


def check_implemented(
    optimizer_name: str, options: Mapping[str, Any], implemented: Iterable[str] = ()
) -> None:
    """Refuse, rather than ignore, a ``torch.optim`` option optimlib does not implement.

    ``implemented`` names the options of :data:`UNIMPLEMENTED_OPTIONS` that this
    optimizer does implement (``fused`` where it has a fused update).
    """
    skipped = set(implemented)
    for option, allowed in UNIMPLEMENTED_OPTIONS.items():
        if option in skipped:
            continue
        if option in options and options[option] not in allowed:
            raise NotImplementedError(
                f"optimlib.{optimizer_name} does not implement {option}={options[option]!r} "
                f"(allowed: {', '.join(map(repr, allowed))}); use foreach=True for the fast "
                f"path, or torch.optim.{optimizer_name} for {option}"
            )


def check_params(params: Any) -> list[Any]:
    """Materialise ``params`` and check it holds tensors or parameter-group dicts.

    ``torch.optim.Optimizer`` accepts an iterable of tensors, or an iterable of
    dicts whose ``"params"`` entry is a tensor or an iterable of tensors.
    """
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "Invalid params: params argument given to the optimizer should be an iterable "
            "of Tensors or dicts, but got a single Tensor (wrap it in a list: [tensor])"
        )
    if isinstance(params, (set, frozenset)):
        raise TypeError(
            "Invalid params: got a set, whose order changes between runs; pass a list so "
            "that checkpoints load back in order"
        )
    if isinstance(params, dict) or not isinstance(params, Iterable):
        raise TypeError(
            "Invalid params: params argument given to the optimizer should be an iterable "
            f"of Tensors or dicts, but got {type(params).__name__}"
        )
    params = list(params)
    if not params:
        raise ValueError("Invalid params: the optimizer got an empty parameter list")
    checked = []
    for index, entry in enumerate(params):
        if isinstance(entry, dict):
            if "params" not in entry:
                raise ValueError(f"Invalid params: parameter group {index} has no 'params' key")
            tensors = entry["params"]
            if isinstance(tensors, (set, frozenset)):
                raise TypeError(
                    f"Invalid params: parameter group {index} holds a set, whose order changes "
                    "between runs; pass a list so that checkpoints load back in order"
                )
            # Materialise once: a generator such as model.parameters() can only be read once.
            tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
            entry = {**entry, "params": tensors}
            located = [
                (f"element {position} of parameter group {index}", tensor)
                for position, tensor in enumerate(tensors)
            ]
        else:
            located = [(f"element {index} of params", entry)]
        for where, tensor in located:
            if _is_named_tensor(tensor):
                tensor = tensor[1]
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"Invalid params: {where} is a {type(tensor).__name__}, but an optimizer "
                    "can only update torch.Tensor objects (pass model.parameters() or a list "
                    "of tensors)"
                )
        checked.append(entry)
    return checked


def _is_named_tensor(entry: Any) -> bool:
    """``(name, tensor)``, as ``model.named_parameters()`` yields (torch >= 2.6 accepts it)."""
    return (
        isinstance(entry, tuple)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], torch.Tensor)
    )


def check_betas(betas: Any, name: str = "beta parameter") -> tuple[float, float]:
    """A pair of decay rates, each in [0, 1); returned as plain numbers."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        check_range(
            f"betas[{index}]",
            beta,
            0.0,
            1.0,
            high_inclusive=False,
            label=f"{name} at index {index}",
        )
    return _as_number("betas[0]", betas[0]), _as_number("betas[1]", betas[1])


def check_etas(etas: Any) -> None:
    """``0 < etaminus < 1 < etaplus``, worded as torch.optim.Rprop words it."""
    if not isinstance(etas, (tuple, list)) or len(etas) != 2:
        raise TypeError(f"Invalid etas: expected a pair (etaminus, etaplus), got {etas!r}")
    etaminus, etaplus = (_as_number(f"etas[{index}]", eta) for index, eta in enumerate(etas))
    if not 0.0 < etaminus < 1.0 < etaplus:
        raise ValueError(
            f"Invalid eta values: {etas[0]}, {etas[1]} (must be 0 < etaminus < 1 < etaplus)"
        )


#: Marks an argument that an optimizer does not have (Rprop has no eps), as
#: opposed to one the caller set to None, which is refused.
NOT_AN_ARGUMENT: Any = object()


def check_common(
    lr: Any, eps: Any = NOT_AN_ARGUMENT, weight_decay: Any = NOT_AN_ARGUMENT, **flags: Any
) -> None:
    """The checks nearly every optimizer makes: lr, eps and weight_decay >= 0, boolean flags."""
    check_non_negative("lr", lr)
    if eps is not NOT_AN_ARGUMENT:
        check_non_negative("eps", eps)
    if weight_decay is not NOT_AN_ARGUMENT:
        check_non_negative("weight_decay", weight_decay)
    for name, value in flags.items():
        if name == "foreach":
            check_foreach(value)
        else:
            check_bool(name, value)


def check_integer(name: str, value: Any, minimum: int = 0) -> None:
    """Raise unless ``value`` is an integer (not a bool) >= ``minimum``; numpy's count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {name} value: {value!r} (must be an integer >= {minimum})")
    check_range(name, value, minimum)
