"""``fused=True``: one kernel per step for each bucket of one device and one dtype.

For Adam, AdamW, SGD and Adagrad PyTorch ships fused kernels for the CPU and
for GPUs (``torch._fused_adam_``, ``torch._fused_adamw_``, ``torch._fused_sgd_``,
``torch._fused_adagrad_``): each reads a parameter, its gradient and its state
once, does the whole update in registers and writes them back once. optimlib
calls those kernels rather than rewriting them: the arithmetic of a fused
step is then torch's C++, and the readable for-loop stays the reference that
the tests hold it to (``tests/library/test_fused.py``).

The functions here have the signature of the for-loop they replace, plus
``grad_scale`` and ``found_inf``, which ``torch.amp.GradScaler`` hands an
optimizer that declares ``_step_supports_amp_scaling``: the kernels divide the
gradients by ``grad_scale`` in place, and do nothing at all where
``found_inf`` is 1, so a step with an overflowed gradient changes nothing
(the step counters are advanced and then moved back by ``found_inf``, on the
device, without a synchronisation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._foreach import group_by_device_and_dtype

#: Device types with fused kernels, as ``torch.optim`` lists them.
FUSED_DEVICE_TYPES = ("mps", "cuda", "xpu", "hpu", "cpu", "mtia")


def fused_device_types() -> list[str]:
    """The device types with fused optimizer kernels, in torch's order and wording."""
    return [*FUSED_DEVICE_TYPES, torch._C._get_privateuse1_backend_name()]


def check_fused_params(params: list[Tensor]) -> None:
    """torch's error for a parameter the fused kernels cannot update."""
    devices = fused_device_types()
    for param in params:
        if param.is_floating_point() and (param.is_cpu or param.is_cuda):
            continue  # the common case, without building a torch.device per parameter
        if not (param.device.type in devices and torch.is_floating_point(param)):
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {devices} but {param.dtype} and {param.device.type}"
            )


def check_fused_options(defaults: dict[str, Any]) -> None:
    """torch.optim's constructor rules for ``fused=True``, in its words."""
    if not defaults.get("fused"):
        return
    if defaults.get("differentiable"):
        raise RuntimeError("`fused` does not support `differentiable`")
    if defaults.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def _on(value: Tensor | None, device: torch.device, cache: dict[torch.device, Tensor]) -> Any:
    """``grad_scale``/``found_inf`` on ``device``, copied there at most once per step."""
    if value is None:
        return None
    if value.device == device:
        return value
    if device not in cache:
        cache[device] = value.to(device, non_blocking=True)
    return cache[device]


def _learning_rate(lr: Any, device: torch.device) -> Any:
    """A tensor ``lr`` is passed as a tensor (no synchronisation), on the kernel's device.

    A CPU tensor is read by the kernels as a number, as torch.optim leaves it.
    """
    if isinstance(lr, Tensor) and lr.device.type != "cpu" and lr.device != device:
        return lr.to(device, non_blocking=True)
    return lr


def _number(value: Any) -> float:
    return float(value)


def _buckets(tensor_lists: list[list[Any]]) -> list[tuple[torch.device, list[list[Any]]]]:
    return [(lists[0][0].device, lists) for _, lists in group_by_device_and_dtype(tensor_lists)]


def _undo_skipped_steps(steps: list[Tensor], found_inf: Tensor | None) -> None:
    if found_inf is not None:
        torch._foreach_sub_(steps, [found_inf] * len(steps))


def adam_fused(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Any],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """:func:`optimlib.adam.adam_for_loop` as torch's fused Adam (or AdamW) kernel."""
    kernel = torch._fused_adamw_ if decoupled_weight_decay else torch._fused_adam_
    scales: dict[torch.device, Tensor] = {}
    infs: dict[torch.device, Tensor] = {}
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps]
    for device, (p, g, m, v, vmax, t) in _buckets(lists):
        inf = _on(found_inf, device, infs)
        torch._foreach_add_(t, 1)
        kernel(
            p,
            g,
            m,
            v,
            vmax if amsgrad else [],
            t,
            lr=_learning_rate(lr, device),
            beta1=_number(betas[0]),
            beta2=_number(betas[1]),
            weight_decay=_number(weight_decay),
            eps=_number(eps),
            amsgrad=amsgrad,
            maximize=maximize,
            grad_scale=_on(grad_scale, device, scales),
            found_inf=inf,
        )
        _undo_skipped_steps(t, inf)


def sgd_fused(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Any],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """:func:`optimlib.sgd.sgd_for_loop` as torch's fused SGD kernel.

    A buffer that does not exist yet (``None``) is created here and filled by
    the kernel with the first direction (``is_first_step``); parameters with
    and without a buffer go to separate kernel calls, so a parameter that joins
    later starts its buffer as the for-loop does.
    """
    scales: dict[torch.device, Tensor] = {}
    infs: dict[torch.device, Tensor] = {}
    new = [i for i, buffer in enumerate(momentum_buffers) if buffer is None]
    if momentum != 0 and new and found_inf is not None and bool(found_inf):
        # Until the buffers' first step that is not skipped: a skipped step
        # must not leave behind a buffer the kernel never filled.
        return
    calls: list[tuple[bool, list[int]]] = [(False, list(range(len(params))))]
    if momentum != 0:
        for i in new:
            momentum_buffers[i] = torch.empty_like(params[i])
        fresh = set(new)
        old = [i for i in range(len(params)) if i not in fresh]
        calls = [(True, new), (False, old)]
    for is_first_step, indices in calls:
        if not indices:
            continue
        lists = [[values[i] for i in indices] for values in (params, grads, momentum_buffers)]
        for device, (p, g, b) in _buckets(lists):
            torch._fused_sgd_(
                p,
                g,
                b if momentum != 0 else [],
                weight_decay=_number(weight_decay),
                momentum=_number(momentum),
                lr=_learning_rate(lr, device),
                dampening=_number(dampening),
                nesterov=nesterov,
                maximize=maximize,
                is_first_step=is_first_step,
                grad_scale=_on(grad_scale, device, scales),
                found_inf=_on(found_inf, device, infs),
            )


def adagrad_fused(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    lr_decay: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """:func:`optimlib.adagrad.adagrad_for_loop` as torch's fused Adagrad kernel."""
    scales: dict[torch.device, Tensor] = {}
    infs: dict[torch.device, Tensor] = {}
    for device, (p, g, s, t) in _buckets([params, grads, sums, steps]):
        inf = _on(found_inf, device, infs)
        torch._foreach_add_(t, 1)
        torch._fused_adagrad_(
            p,
            g,
            s,
            t,
            lr=_learning_rate(lr, device),
            lr_decay=_number(lr_decay),
            weight_decay=_number(weight_decay),
            eps=_number(eps),
            maximize=maximize,
            grad_scale=_on(grad_scale, device, scales),
            found_inf=inf,
        )
        _undo_skipped_steps(t, inf)
