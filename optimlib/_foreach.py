"""Choosing and feeding the multi-tensor (``torch._foreach_*``) code path.

Each optimizer has a per-tensor for-loop reference and a foreach version that
must give the same numbers. The choice between them is made here, once, for
every optimizer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

#: Device types whose foreach kernels really launch one kernel for many tensors.
FOREACH_DEVICE_TYPES = ("cuda", "xpu", "mtia")


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
        return foreach
    return bool(params) and all(p.device.type in FOREACH_DEVICE_TYPES for p in params)


def bucket_indices(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Positions of ``tensors`` split into buckets of one device and one dtype.

    ``torch._foreach_*`` kernels need every tensor of a call on one device with
    one dtype; parallel lists (parameters, gradients, state) are indexed with
    the same positions so that they stay aligned.
    """
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        buckets[(tensor.device, tensor.dtype)].append(index)
    return list(buckets.values())


def pick(tensors: Sequence[Tensor], indices: Sequence[int]) -> list[Tensor]:
    return [tensors[index] for index in indices]


def to_scalar(value: float | Tensor) -> float | Tensor:
    """A hyperparameter as ``torch.optim`` computes with it.

    A one-element tensor (an ``lr`` that a scheduler updates in place, say)
    stays a 0-d tensor, so values derived from it round in its dtype exactly as
    they do in ``torch.optim``; kernels receive them through ``float()``.
    """
    return value.squeeze() if isinstance(value, Tensor) else value


def numbers(values: list[float | Tensor]) -> list[float]:
    """Per-tensor scalars for a foreach kernel, as plain Python numbers."""
    return [float(value) for value in values]
