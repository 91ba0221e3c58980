"""Choosing and feeding the multi-tensor (``torch._foreach_*``) code path.

Each optimizer has a per-tensor for-loop reference and a foreach version that
must give the same numbers. The choice between them is made here, once, for
every optimizer, and so is the split of a step's tensors into the buckets of
one device and one dtype that foreach kernels need.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

#: Device types whose foreach kernels really launch one kernel for many tensors.
FOREACH_DEVICE_TYPES = ("cuda", "xpu", "mtia")

T = TypeVar("T")


def use_foreach(foreach: bool | None, params: Sequence[Tensor], grads: Sequence[Tensor]) -> bool:
    """Decide whether a step runs the foreach implementation.

    ``foreach=True`` or ``False`` is obeyed. ``None`` follows ``torch.optim``:
    foreach when every parameter is on a device with real multi-tensor kernels
    (CUDA), the for-loop otherwise. Sparse gradients always take the for-loop,
    because the foreach kernels are dense-only.
    """
    if any(grad.is_sparse for grad in grads):
        return False
    if foreach is not None:
        return bool(foreach)
    return bool(params) and all(p.device.type in FOREACH_DEVICE_TYPES for p in params)


def group_by_device_and_dtype(
    tensor_lists: Sequence[list[T]],
    extra_key: Callable[[Tensor], Hashable] | None = None,
) -> list[tuple[list[int], list[list[T]]]]:
    """Split parallel lists into buckets of one device and one dtype, all at once.

    ``tensor_lists[0]`` holds the parameters; the other lists (gradients, each
    state entry, possibly holding ``None``) are split at the same positions so
    that they stay aligned. ``extra_key(param)`` splits the buckets further
    (Adafactor's matrices from its vectors, say). Returns, per bucket, the
    positions it took and its lists. Like ``torch.optim``'s
    ``_group_tensors_by_device_and_dtype``, without its private API.
    """
    params: list[Any] = tensor_lists[0]
    if extra_key is None and params:
        device, dtype = params[0].device, params[0].dtype
        if all(p.device == device and p.dtype == dtype for p in params):
            # The common case, one bucket: the lists themselves, nothing copied.
            return [(list(range(len(params))), list(tensor_lists))]
    positions: dict[Hashable, list[int]] = {}
    for index, param in enumerate(params):
        key: Hashable = (param.device, param.dtype)
        if extra_key is not None:
            key = (param.device, param.dtype, extra_key(param))
        positions.setdefault(key, []).append(index)
    return [
        (indices, [[values[i] for i in indices] for values in tensor_lists])
        for indices in positions.values()
    ]


def numbers(values: Sequence[float | Tensor]) -> list[float]:
    """Per-tensor scalars for a foreach kernel, as plain Python numbers."""
    return [float(value) for value in values]


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (a parameter that FSDP2 shards, say).

    Where torch.distributed.tensor was never imported no tensor can be one, and
    a single-process run is spared the second the import takes.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def foreach_copy_(
    targets: list[Tensor] | tuple[Tensor, ...], sources: list[Tensor] | tuple[Tensor, ...]
) -> None:
    """``torch._foreach_copy_``, or one ``copy_`` per tensor where any is a DTensor.

    DTensor has no rule for ``_foreach_copy_``. The foreach kernel stays the
    default: torch 2.13's compiler drops a per-tensor ``copy_`` into a 0-d tensor.
    """
    if any(is_dtensor(target) for target in targets):
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)
    else:
        torch._foreach_copy_(targets, sources)
