"""The learning-rate range test: one short run that sweeps the lr and records the loss.

Smith (2017), "Cyclical Learning Rates for Training Neural Networks", Section 3.3,
trains for a few hundred mini-batches while the learning rate grows from a
value too small to matter to one large enough to make the loss explode. Where
the loss falls fastest, the lr is large enough to make progress; where it
stops falling and turns up, it is too large. The curve brackets the useful
range in one run instead of a grid of full trainings.

This version grows the lr geometrically, as is usual since (the curve is read
against a logarithmic lr axis), smooths the noisy per-batch loss with a
bias-corrected exponential average, and stops once that average has clearly
diverged. Afterwards the model and the optimizer are put back exactly as they
were, so the sweep can run before a real training without changing it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from optimlib._validation import check_integer, check_range

__all__ = ["LRRangeResult", "lr_range_test"]


@dataclass(frozen=True)
class LRRangeResult:
    """What :func:`lr_range_test` recorded, one entry per mini-batch it trained on.

    Attributes:
        lrs: the learning rate of each step, a geometric sequence from ``start_lr``.
        losses: the loss of each mini-batch, computed before that step's update.
        smoothed: the bias-corrected exponential moving average of ``losses``.
        stopped_early: whether the sweep ended before ``num_steps`` because the
            smoothed loss diverged (or a loss was not finite).
        minimum_lr: the lr at which the smoothed loss is lowest.
        steepest_lr: the lr at which the smoothed loss falls fastest against
            ``log(lr)`` (searched up to the minimum).
        suggested_lr: ``minimum_lr / 10``, the suggestion; see :func:`lr_range_test`.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped_early: bool
    minimum_lr: float
    steepest_lr: float
    suggested_lr: float


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], Tensor],
    loader: Iterable[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
) -> LRRangeResult:
    r"""Sweep the learning rate geometrically over ``num_steps`` mini-batches.

    Step :math:`i = 0, \dots, n - 1` (with :math:`n` = ``num_steps``) trains
    on one mini-batch with every parameter group's lr set to

    .. math::

        \eta_i = \eta_\text{start}
            \left(\frac{\eta_\text{end}}{\eta_\text{start}}\right)^{i / (n - 1)},

    so the first step uses ``start_lr``, the last ``end_lr``, and successive
    lrs have a constant ratio. The loss :math:`\ell_i` of each batch (before
    its update) is recorded, with its exponential moving average, corrected
    for its start at zero as Adam corrects its moments
    (:math:`\beta` = ``smoothing``):

    .. math::

        a_i = \beta a_{i-1} + (1 - \beta) \ell_i, \quad a_{-1} = 0, \qquad
        s_i = \frac{a_i}{1 - \beta^{i + 1}}.

    The sweep stops early once :math:`s_i` exceeds ``diverge_factor`` times
    the lowest smoothed loss so far (or a loss is not finite); that step is
    still recorded. The loss should be positive, as cross-entropy and squared
    errors are.

    The average spans about :math:`1 / (1 - \beta)` batches (50 by default),
    so it trails the raw losses by tens of steps: give a sweep a few hundred
    steps, or a smaller ``smoothing`` when it must be short.

    The suggestion is one tenth of the lr at the minimum of :math:`s`: at the
    minimum the lr is already at, or past, the edge of stability (and the
    average's lag moves the minimum later still), an order of magnitude below
    it is safely inside, and a minimum is less sensitive to noise than the
    steepest slope. The lr of steepest descent, the other common reading
    of the curve, is returned too (``steepest_lr``); both are read off a
    smoothed curve and are starting points for a short tuning run, not
    optima.

    Each step runs ``optimizer.zero_grad()``, ``loss_fn(model(inputs),
    targets).backward()`` and ``optimizer.step(closure)`` with those inside
    the closure, so optimizers that need one (L-BFGS) work too. Batches are
    ``(inputs, targets)`` pairs; tensors among them are moved to the device of
    the model's first parameter. The loader is restarted when it runs out
    before ``num_steps`` (an iterator that cannot restart raises a
    ``ValueError``). The model trains in training mode.

    Afterwards (also after an error) the sweep leaves no trace: the values of
    the model's parameters and buffers (and of any other tensor the optimizer
    updates), their gradients, every module's training mode, the optimizer's
    ``state_dict()`` (state and hyperparameters, lr included) and the global
    random number generators of the CPU and of the devices the parameters live
    on are restored. A generator the loader owns (``DataLoader(generator=...)``)
    is not: it advances as in any pass over the data.

    Args:
        model: the network; its parameters must be in ``optimizer``.
        optimizer: any ``torch.optim.Optimizer``, from optimlib or torch.
        loss_fn: ``loss_fn(outputs, targets)``, a scalar tensor
            (``nn.CrossEntropyLoss()``, say).
        loader: an iterable of ``(inputs, targets)`` batches (a ``DataLoader``).
        start_lr: the first lr, > 0.
        end_lr: the last lr, > ``start_lr``.
        num_steps: the number of mini-batches (and lrs) in a full sweep, >= 2.
        smoothing: the moving average's factor :math:`\beta`, in [0, 1);
            0 leaves the losses unsmoothed.
        diverge_factor: the stopping threshold, > 1 (``math.inf``: never stop,
            except for a loss that is not finite).

    Returns:
        An :class:`LRRangeResult`.
    """
    check_range("start_lr", start_lr, 0.0, math.inf, low_inclusive=False, high_inclusive=False)
    check_range("end_lr", end_lr, start_lr, math.inf, low_inclusive=False, high_inclusive=False)
    check_integer("num_steps", num_steps, minimum=2)
    check_range("smoothing", smoothing, 0.0, 1.0, high_inclusive=False)
    check_range("diverge_factor", diverge_factor, 1.0, math.inf, low_inclusive=False)

    parameters = list(model.parameters())
    if not parameters:
        raise ValueError("Invalid model: it has no parameters to train")
    device = parameters[0].device
    ratio = end_lr / start_lr
    lrs = [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]

    with ExitStack() as restore:
        restore.enter_context(_forked_random_state(model, optimizer))
        restore.callback(_snapshot(model, optimizer))
        model.train()
        batches = _cycle(loader)
        recorded: list[float] = []
        losses: list[float] = []
        smoothed: list[float] = []
        average, best, stopped_early = 0.0, math.inf, False
        for step, lr in enumerate(lrs):
            inputs, targets = (_to(part, device) for part in next(batches))
            for group in optimizer.param_groups:
                current = group["lr"]
                group["lr"] = torch.full_like(current, lr) if isinstance(current, Tensor) else lr
            loss_value = _train_step(model, optimizer, loss_fn, inputs, targets)
            recorded.append(lr)
            losses.append(loss_value)
            average = smoothing * average + (1.0 - smoothing) * loss_value
            smooth = average / (1.0 - smoothing ** (step + 1))
            smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > diverge_factor * best:
                stopped_early = step < num_steps - 1
                break
            best = min(best, smooth)

    minimum_lr, steepest_lr = _read_curve(recorded, smoothed)
    return LRRangeResult(
        lrs=recorded,
        losses=losses,
        smoothed=smoothed,
        stopped_early=stopped_early,
        minimum_lr=minimum_lr,
        steepest_lr=steepest_lr,
        suggested_lr=minimum_lr / 10.0,
    )


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
) -> float:
    """One step with the loss in a closure; the loss of its first evaluation."""
    first_loss: list[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        loss = loss.detach()
        if not first_loss:
            first_loss.append(loss)
        return loss

    optimizer.step(closure)  # type: ignore[arg-type]
    return float(first_loss[0])


def _read_curve(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """The lr at the lowest smoothed loss, and the lr of steepest descent before it.

    The slope against ``log(lr)`` is taken with central differences inside the
    curve and one-sided ones at its ends (as ``numpy.gradient`` takes them);
    the log-lrs are equally spaced, so their spacing is a common factor.
    """
    finite = [i for i, value in enumerate(smoothed) if math.isfinite(value)]
    if not finite:
        return lrs[0], lrs[0]
    lowest = min(finite, key=lambda i: smoothed[i])
    curve = smoothed[: lowest + 1]
    if len(curve) < 2:
        return lrs[lowest], lrs[lowest]
    slopes = [curve[1] - curve[0]]
    slopes += [(curve[i + 1] - curve[i - 1]) / 2.0 for i in range(1, len(curve) - 1)]
    slopes.append(curve[-1] - curve[-2])
    steepest = min(range(len(slopes)), key=lambda i: slopes[i])
    return lrs[lowest], lrs[steepest]


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's batches, restarting it whenever it runs out."""
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise ValueError(
                "Invalid loader: it yielded no batch (an iterator that is used up cannot "
                "restart; pass a DataLoader or a list of batches)"
            )


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


@contextmanager
def _forked_random_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Restore the CPU generator, and those of the parameters' accelerators, on exit."""
    devices = {t.device for t in _tensors_to_restore(model, optimizer)}
    accelerators = sorted({d for d in devices if d.type not in ("cpu", "meta")}, key=str)
    if not accelerators:
        with torch.random.fork_rng(devices=[]):
            yield
        return
    device_type = accelerators[0].type
    indices = [d.index or 0 for d in accelerators if d.type == device_type]
    with torch.random.fork_rng(devices=indices, device_type=device_type):
        yield


def _tensors_to_restore(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The model's parameters and buffers, and any other tensor the optimizer updates, once."""
    tensors: dict[int, Tensor] = {}
    for tensor in model.parameters():
        tensors.setdefault(id(tensor), tensor)
    for group in optimizer.param_groups:
        for tensor in group["params"]:
            tensors.setdefault(id(tensor), tensor)
    for buffer in model.buffers():
        tensors.setdefault(id(buffer), buffer)
    return list(tensors.values())


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """Record what a sweep changes, and return the function that puts it back."""
    tensors = _tensors_to_restore(model, optimizer)
    values = [tensor.detach().clone() for tensor in tensors]
    grads = [tensor.grad for tensor in tensors]
    grad_values = [None if grad is None else grad.detach().clone() for grad in grads]
    modes = [(module, module.training) for module in model.modules()]
    optimizer_state = copy.deepcopy(optimizer.state_dict())

    def restore() -> None:
        with torch.no_grad():
            for tensor, value, grad, grad_value in zip(
                tensors, values, grads, grad_values, strict=True
            ):
                tensor.copy_(value)
                if grad is not None and grad_value is not None:
                    grad.copy_(grad_value)
                tensor.grad = grad
        for module, training in modes:
            module.training = training
        optimizer.load_state_dict(optimizer_state)

    return restore
