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


def use_foreach(foreach: bool | None, tensors: Sequence[Tensor]) -> bool:
    """Decide whether a step runs the foreach implementation.

    ``foreach=True`` or ``False`` is obeyed. ``None`` follows ``torch.optim``:
    foreach when every tensor is on CUDA (where launching one kernel for many
    tensors pays off), the for-loop otherwise. Sparse gradients always take the
    for-loop, because the foreach kernels are dense-only.
    """
    if any(tensor.is_sparse for tensor in tensors):
        return False
    if foreach is not None:
        return foreach
    return bool(tensors) and all(tensor.device.type == "cuda" for tensor in tensors)


def group_by_device_and_dtype(
    *tensor_lists: Sequence[Tensor],
) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists of tensors into buckets of one device and one dtype.

    ``torch._foreach_*`` kernels need every tensor of a call on one device with
    one dtype; the i-th tensors of all lists always land in the same bucket,
    keyed by the first list's tensor.
    """
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], ...]] = defaultdict(
        lambda: tuple([] for _ in tensor_lists)
    )
    for row in zip(*tensor_lists, strict=True):
        key = (row[0].device, row[0].dtype)
        for bucket, tensor in zip(buckets[key], row, strict=True):
            bucket.append(tensor)
    return list(buckets.values())
