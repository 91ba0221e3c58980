r"""Small update pieces that several algorithms share, each in two forms.

The per-tensor form serves the for-loop reference; the ``foreach_`` form does
the same arithmetic on lists of tensors and must give identical results.
Keeping one copy of each piece is what lets Adam, AdamW, NAdam, RAdam,
Adamax, RMSprop and Adadelta read as their equations rather than as
variations on one another's code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeGuard

import torch
from torch import Tensor


def is_learned(hyperparameter: object) -> TypeGuard[Tensor]:
    """Whether autograd differentiates through a hyperparameter (a tensor that requires grad).

    Under ``differentiable=True`` a learning rate, weight decay or beta may be
    such a tensor; kernels' ``alpha=`` and ``value=`` arguments take numbers
    only, so the updates then use a tensor product instead, as torch.optim does.
    """
    return (
        isinstance(hyperparameter, Tensor)
        and hyperparameter.requires_grad
        and torch.is_grad_enabled()
    )


def overwritable(tensor: Tensor) -> Tensor:
    """A fresh result the caller may now change in place: itself, or a copy while autograd records.

    ``x.sqrt().add_(eps)`` saves an allocation; but when a differentiable step
    is being recorded, autograd keeps ``x.sqrt()`` for the backward pass, and
    changing it in place would corrupt the gradient. torch.optim makes the
    same distinction.
    """
    return tensor.clone() if torch.is_grad_enabled() and tensor.requires_grad else tensor


def add_scaled_(tensor: Tensor, other: Tensor, scale: float) -> Tensor:
    r""":math:`x \leftarrow x + s\, y` in place: ``tensor.add_(other, alpha=scale)``.

    While ``torch.compile`` traces optimlib's fused path, a scale that changes
    from step to step (an ``lr``, a bias correction) is a 0-d tensor (see
    :func:`as_number`). torch's number-only arguments (``alpha=``, ``value=``)
    must not receive it: torch 2.14's compiler sometimes bakes such a tensor
    into the compiled code as a constant, without a guard. So a tensor scale
    multiplies instead, as torch.optim's capturable paths do. The same holds
    in a step with ``capturable=True`` (:func:`scalars_are_tensors`), where
    passing a device tensor to a number-only argument would read it on the
    host. Otherwise the number-only argument is used, whatever the scale.
    """
    if scalars_are_tensors() and isinstance(scale, Tensor):
        return tensor.add_(other * computed_once(scale))
    return tensor.add_(other, alpha=scale)


def addcdiv_scaled_(tensor: Tensor, numerator: Tensor, denominator: Tensor, scale: float) -> Tensor:
    r""":math:`x \leftarrow x + s\, a / b` in place: ``tensor.addcdiv_(a, b, value=scale)``.

    A tensor ``scale`` multiplies instead (see :func:`add_scaled_`).
    """
    if scalars_are_tensors() and isinstance(scale, Tensor):
        return tensor.add_(numerator / denominator * computed_once(scale))
    return tensor.addcdiv_(numerator, denominator, value=scale)


def lerp_toward_(tensor: Tensor, end: Tensor, weight: float) -> Tensor:
    r""":math:`x \leftarrow x + w (e - x)` in place: ``tensor.lerp_(end, weight)``.

    A tensor ``weight`` (see :func:`add_scaled_`) is cast to the tensor's dtype,
    as ``lerp_`` requires.
    """
    if scalars_are_tensors() and isinstance(weight, Tensor):
        return tensor.lerp_(end, computed_once(weight.to(tensor.dtype)))
    return tensor.lerp_(end, weight)


def larger(a: float, b: float) -> float:
    """``max(a, b)``; for 0-d tensors (:func:`scalars_are_tensors`), without a host read."""
    if scalars_are_tensors() and (isinstance(a, Tensor) or isinstance(b, Tensor)):
        return torch.maximum(_float64(a), _float64(b))
    return max(a, b)


def smaller(a: float, b: float) -> float:
    """``min(a, b)``; for 0-d tensors (:func:`scalars_are_tensors`), without a host read."""
    if scalars_are_tensors() and (isinstance(a, Tensor) or isinstance(b, Tensor)):
        return torch.minimum(_float64(a), _float64(b))
    return min(a, b)


def _float64(value: float | Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def descent_direction(
    param: Tensor, grad: Tensor, *, weight_decay: float, maximize: bool
) -> Tensor:
    r"""The gradient to descend along: :math:`\pm g + \lambda \theta`.

    ``maximize`` flips the sign of the gradient (gradient ascent on the
    objective is descent on its negative); ``weight_decay`` adds the gradient
    of the L2 penalty :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2`. Returns
    ``grad`` itself when there is nothing to change, a new tensor otherwise,
    so the caller never modifies the user's ``.grad``.
    """
    direction = -grad if maximize else grad
    if is_learned(weight_decay):  # the clone: the step changes param in place
        direction = direction.addcmul(param.clone(), weight_decay)
    elif weight_decay != 0:
        direction = direction.add(param, alpha=weight_decay)
    return direction


def foreach_descent_direction(
    params: list[Tensor], grads: list[Tensor], *, weight_decay: float, maximize: bool
) -> list[Tensor]:
    """:func:`descent_direction` for lists of tensors."""
    directions = list(torch._foreach_neg(grads)) if maximize else grads
    if weight_decay != 0:
        directions = list(torch._foreach_add(directions, params, alpha=weight_decay))
    return directions


def decay_weights(param: Tensor, *, lr: float, weight_decay: float) -> None:
    r"""Decoupled weight decay: :math:`\theta \leftarrow (1 - \gamma\lambda)\theta`.

    Loshchilov and Hutter (2019); AdamW, and NAdam and RAdam on request.
    """
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)


def foreach_decay_weights(params: list[Tensor], *, lr: float, weight_decay: float) -> None:
    if weight_decay != 0:
        torch._foreach_mul_(params, float(1 - lr * weight_decay))


def update_average(average: Tensor, value: Tensor, *, decay: float) -> None:
    r"""Exponential moving average: :math:`m \leftarrow \beta m + (1 - \beta) x`."""
    average.lerp_(value, 1 - decay)


def foreach_update_average(averages: list[Tensor], values: list[Tensor], *, decay: float) -> None:
    torch._foreach_lerp_(averages, values, 1 - decay)


def update_square_average(average: Tensor, value: Tensor, *, decay: float) -> None:
    r"""Moving average of squares: :math:`v \leftarrow \beta v + (1 - \beta) x^2`."""
    if is_learned(decay):  # the same average, as v + (1 - beta)(x^2 - v)
        average.lerp_(value.square(), 1 - decay)
    else:
        average.mul_(decay).addcmul_(value, value, value=1 - decay)


def foreach_update_square_average(
    averages: list[Tensor], values: list[Tensor], *, decay: float
) -> None:
    torch._foreach_mul_(averages, decay)
    torch._foreach_addcmul_(averages, values, values, value=1 - decay)


def update_maximum(running_max: Tensor, value: Tensor) -> None:
    r"""A running maximum, in place: :math:`\hat v \leftarrow \max(\hat v, x)`.

    Under ``differentiable=True`` autograd must keep the old maximum for the
    backward pass, so the new one is computed out of place and copied in.
    """
    if torch.compiler.is_compiling():  # one pass in compiled code, where out= makes two
        running_max.copy_(torch.maximum(running_max, value))
    elif torch.is_grad_enabled() and (running_max.requires_grad or value.requires_grad):
        running_max.copy_(torch.maximum(running_max.clone(), value))
    else:
        torch.maximum(running_max, value, out=running_max)


def bias_correction(decay: float, step: float) -> float:
    r""":math:`1 - \beta^t`: the weight a zero-initialised moving average has gathered."""
    if scalars_are_tensors() and isinstance(step, Tensor):
        return computed_once(1 - decay**step)
    return 1 - decay**step


_tracing_fused = False


@contextlib.contextmanager
def fused_tracing() -> Iterator[None]:
    """Marks the calls of optimlib's compiled fused path (``optimlib._compiled``)."""
    global _tracing_fused
    before, _tracing_fused = _tracing_fused, True
    try:
        yield
    finally:
        _tracing_fused = before


def tracing_fused() -> bool:
    """Whether ``torch.compile`` is tracing a for-loop for optimlib's compiled ``fused=True``.

    Then the values that change from step to step are 0-d tensors (see
    :func:`as_number`), and the helpers here use tensor arithmetic for them. A
    step compiled some other way (``torch.compile(optimizer.step)``) reads
    numbers, as it always has.
    """
    return _tracing_fused and torch.compiler.is_compiling()


_device_scalars = False


@contextlib.contextmanager
def device_scalars() -> Iterator[None]:
    """Marks a step with ``capturable=True``: its counters stay tensors on the device.

    A CUDA graph records kernels, not host work: a value read back to the host
    (``.item()``, a number-only argument given a tensor, an ``if`` on a tensor)
    would be read once, while capturing, and replayed unchanged. So in such a
    step the update computes what depends on the step count with 0-d tensors,
    by the same helpers the compiled fused path uses.
    """
    global _device_scalars
    before, _device_scalars = _device_scalars, True
    try:
        yield
    finally:
        _device_scalars = before


def scalars_are_tensors() -> bool:
    """Whether step-dependent values (counts, bias corrections) are 0-d tensors.

    They are while the compiled fused path is traced (:func:`tracing_fused`)
    and in a capturable step (:func:`device_scalars`); the helpers here then
    use tensor arithmetic for them instead of number-only arguments.
    """
    return _device_scalars or tracing_fused()


#: The step-dependent scales of a traced fused step, kept as outputs of the graph.
_scales: list[Tensor] = []


def computed_once(scale: Tensor) -> Tensor:
    """Mark a 0-d value of a traced fused step to be computed once, not once per element.

    Inductor inlines a 0-d value into the loop over the elements that reads
    it, and so would compute a power such as :math:`\beta^t` again for every
    element. A tensor that outlives the graph must be stored, and the loop
    then loads it; :mod:`optimlib._compiled` empties the list after each call.
    Outside traced code (a capturable step) it returns ``scale`` and keeps nothing.
    """
    if tracing_fused():
        _scales.append(scale)
    return scale


def as_number(value: Tensor) -> float:
    """A 0-d tensor's value, for arithmetic on numbers.

    Where scalars are tensors (:func:`scalars_are_tensors`: the compiled fused
    path while traced, or a capturable step), it is a float64 copy of the
    tensor instead, on the tensor's device: the arithmetic is then done in the
    same double precision as with numbers, and the step neither synchronises
    with the device nor, compiled, compiles again for each new value.
    """
    if scalars_are_tensors():
        return value.to(torch.float64, copy=True)  # type: ignore[return-value]
    return value.item()


def advance(steps: list[Tensor]) -> list[float]:
    """Add one to each step counter and return the new counts as numbers.

    Counters are 0-d tensors on the CPU, as in ``torch.optim``, so reading
    them back costs no device synchronisation; with ``capturable=True`` they
    are on the device, and the counts stay tensors there (:func:`as_number`).
    Each count is read right after its own increment: a parameter listed twice
    in a group shares one counter, and its two updates see 1 and then 2, as in
    torch.optim's for-loop.
    """
    counts = []
    for step in steps:
        step += 1
        counts.append(as_number(step))
    return counts


def scalar_dtype() -> torch.dtype:
    """The dtype of step counters and other scalar state, as ``torch.optim`` chooses it."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_counter(value: float = 0.0, device: torch.device | str | None = None) -> Tensor:
    """A 0-d scalar-state tensor (a step count, a running product).

    ``torch.full``, not ``torch.tensor``: on a GPU no value is copied from the host.
    """
    return torch.full((), value, dtype=scalar_dtype(), device=device)


def regularized_direction(
    param: Tensor, grad: Tensor, *, lr: float, weight_decay: float, decoupled: bool, maximize: bool
) -> Tensor:
    """The direction for the Adam family: weight decay as an L2 term in the gradient, or,
    when ``decoupled``, applied to the weights directly (AdamW's way) before the update."""
    if decoupled:
        decay_weights(param, lr=lr, weight_decay=weight_decay)
        return descent_direction(param, grad, weight_decay=0, maximize=maximize)
    return descent_direction(param, grad, weight_decay=weight_decay, maximize=maximize)


def foreach_regularized_direction(
    params: list[Tensor],
    grads: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
) -> list[Tensor]:
    if decoupled:
        foreach_decay_weights(params, lr=lr, weight_decay=weight_decay)
        return foreach_descent_direction(params, grads, weight_decay=0, maximize=maximize)
    return foreach_descent_direction(params, grads, weight_decay=weight_decay, maximize=maximize)


def update_moments(
    exp_avg: Tensor, exp_avg_sq: Tensor, direction: Tensor, *, beta1: float, beta2: float
) -> None:
    """Adam's two moving averages: of the direction (:math:`m`) and of its square (:math:`v`)."""
    update_average(exp_avg, direction, decay=beta1)
    update_square_average(exp_avg_sq, direction, decay=beta2)


def foreach_update_moments(
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    directions: list[Tensor],
    *,
    beta1: float,
    beta2: float,
) -> None:
    foreach_update_average(exp_avgs, directions, decay=beta1)
    foreach_update_square_average(exp_avg_sqs, directions, decay=beta2)
