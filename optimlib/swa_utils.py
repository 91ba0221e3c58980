r"""Weight averaging, from scratch: SWA and EMA models, the SWA learning rate, BatchNorm refresh.

A twin of ``torch.optim.swa_utils``, with its names, signatures, defaults,
``state_dict`` entries and error messages:

- :class:`AveragedModel` keeps a copy of a model whose weights are a running
  average of the model's weights along training: the equal-weight average of
  Stochastic Weight Averaging (SWA; Izmailov, Podoprikhin, Garipov, Vetrov and
  Wilson, 2018) by default, or an exponential moving average (EMA) with
  :func:`get_ema_multi_avg_fn`.
- :class:`SWALR` anneals each group's learning rate to a constant ``swa_lr``,
  the schedule SWA averages under.
- :func:`update_bn` recomputes BatchNorm's running statistics for averaged
  weights, which no training step has seen.

The averaging functions come in two forms, as in torch: ``get_*_avg_fn``
returns a function of one tensor pair that returns the new average, and
``get_*_multi_avg_fn`` a function that updates lists of tensors in place with
multi-tensor (``torch._foreach_*``) kernels.

Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018, https://arxiv.org/abs/1803.05407.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import Module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from optimlib._foreach import FOREACH_DEVICE_TYPES, group_by_device_and_dtype
from optimlib._validation import check_range
from optimlib.lr_scheduler import LRScheduler, _plain

__all__ = [
    "SWALR",
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

#: What a multi-tensor averaging function receives: the averages, then the model's tensors.
PARAM_LIST = tuple[Tensor, ...] | list[Tensor]

#: ``avg_fn(averaged, current, num_averaged)`` returns the new average of one tensor.
AvgFn = Callable[[Tensor, Tensor, Tensor | int], Tensor]
#: ``multi_avg_fn(averaged_list, current_list, num_averaged)`` updates the averages in place.
MultiAvgFn = Callable[[PARAM_LIST, PARAM_LIST, Tensor | int], None]


# ------------------------------------------------------- averaging functions


def _check_decay(decay: float) -> None:
    # NaN, which torch lets through, would make every average NaN.
    if not 0.0 <= decay <= 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def _lerp_works_on(tensor: Tensor) -> bool:
    """``lerp`` (and so ``torch._foreach_lerp_``) takes floating-point and complex tensors only."""
    return torch.is_floating_point(tensor) or torch.is_complex(tensor)


def get_swa_avg_fn() -> AvgFn:
    r"""The equal-weight running mean of SWA, for one tensor.

    After :math:`n` models :math:`w_1, \dots, w_n` the average is
    :math:`\bar w_n = \frac1n \sum_{i \le n} w_i`; one more model updates it as

    .. math:: \bar w_{n+1} = \bar w_n + \frac{w_{n+1} - \bar w_n}{n + 1}.

    The returned ``swa_update(averaged, current, num_averaged)`` computes the
    right-hand side, :math:`n` being ``num_averaged``.
    """

    @torch.no_grad()
    def swa_update(averaged: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        return averaged + (current - averaged) / (num_averaged + 1)

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    r"""The exponential moving average (EMA) of the weights, for one tensor.

    .. math:: \bar w_{n+1} = \text{decay}\cdot\bar w_n + (1 - \text{decay})\, w_{n+1},

    starting from :math:`\bar w_1 = w_1` (:class:`AveragedModel` copies the
    first model). Where SWA weighs every model equally, the EMA weighs model
    :math:`i` by :math:`(1 - \text{decay})\,\text{decay}^{n-i}`, so that
    recent models count most: Polyak averaging (Polyak and Juditsky, 1992)
    with exponential weights.

    Args:
        decay: in [0, 1]; 1 keeps the first model, 0 follows the model.
    """
    _check_decay(decay)

    @torch.no_grad()
    def ema_update(ema: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        return decay * ema + (1 - decay) * current

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    r"""SWA's running mean (see :func:`get_swa_avg_fn`) for lists of tensors, in place.

    The update is a linear interpolation towards the new model,
    :math:`\bar w \leftarrow \bar w + \frac{1}{n+1}(w - \bar w)`, one
    ``torch._foreach_lerp_`` for the whole list. When ``num_averaged`` is a
    tensor (as :class:`AveragedModel` passes it), the weight
    ``1 / (num_averaged + 1)`` is, as in torch, a tensor of the default dtype
    (float32): float64 averages then move by a weight rounded to float32, a
    relative error of about 1e-8 that the division of :func:`get_swa_avg_fn`
    does not make.

    Integer tensors (BatchNorm's ``num_batches_tracked`` under
    ``use_buffers=True``) cannot be interpolated; they take the one-tensor
    formula, truncated to an integer as they are stored. torch raises there
    (``addcdiv`` refuses integers).
    """

    @torch.no_grad()
    def swa_update(averaged: PARAM_LIST, current: PARAM_LIST, num_averaged: Tensor | int) -> None:
        if not averaged:
            return
        if _lerp_works_on(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 / (num_averaged + 1))  # type: ignore[arg-type]
        else:
            one_tensor = get_swa_avg_fn()
            for average, value in zip(averaged, current, strict=True):
                average.copy_(one_tensor(average, value, num_averaged))

    return swa_update


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    r"""The EMA of :func:`get_ema_avg_fn` for lists of tensors, in place.

    .. math:: \bar w \leftarrow \bar w + (1 - \text{decay})(w - \bar w),

    one ``torch._foreach_lerp_`` for the whole list; integer tensors, which
    ``lerp`` refuses, take :math:`\text{decay}\cdot\bar w + (1-\text{decay})\,w`,
    truncated to an integer as they are stored.

    Args:
        decay: in [0, 1]; 1 keeps the first model, 0 follows the model.
    """
    _check_decay(decay)

    @torch.no_grad()
    def ema_update(ema: PARAM_LIST, current: PARAM_LIST, num_averaged: Tensor | int) -> None:
        if not ema:
            return
        if _lerp_works_on(ema[0]):
            torch._foreach_lerp_(ema, current, 1 - decay)
        else:
            for average, value in zip(ema, current, strict=True):
                average.copy_(average * decay + value * (1 - decay))

    return ema_update


# ------------------------------------------------------------ AveragedModel


class AveragedModel(Module):
    r"""A copy of ``model`` whose weights average the model's along training: SWA or EMA.

    Each :meth:`update_parameters` call takes in the model's current weights
    :math:`w_{n+1}`. The first copies them; the next ones update the average
    :math:`\bar w_n` of the :math:`n` models seen so far (``n_averaged``):

    .. math::

        \text{SWA (default):}\quad
        \bar w_{n+1} = \bar w_n + \frac{w_{n+1} - \bar w_n}{n + 1}
        = \frac{1}{n+1}\sum_{i=1}^{n+1} w_i,

        \text{EMA:}\quad
        \bar w_{n+1} = \text{decay}\cdot\bar w_n + (1 - \text{decay})\, w_{n+1}.

    Stochastic Weight Averaging (Izmailov, Podoprikhin, Garipov, Vetrov and
    Wilson, "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018, https://arxiv.org/abs/1803.05407) averages the
    weights SGD visits late in training, under a constant or cyclical
    learning rate (:class:`SWALR`); the average lies nearer the centre of a
    wide basin than any single iterate, and generalizes better. The EMA is
    Polyak averaging (Polyak and Juditsky, "Acceleration of Stochastic
    Approximation by Averaging", SIAM J. Control Optim., 1992) with
    exponential instead of equal weights.

    Args:
        model: the model to average; it is deep-copied.
        device: if given, the copy (and ``n_averaged``) live there.
        avg_fn: ``avg_fn(averaged, current, num_averaged) -> new average``,
            called per tensor (see :func:`get_ema_avg_fn`).
        multi_avg_fn: ``multi_avg_fn(averaged_list, current_list,
            num_averaged)``, updating a list of tensors of one device and
            dtype in place (see :func:`get_ema_multi_avg_fn`). With neither,
            the SWA mean.
        use_buffers: average the buffers (BatchNorm's running statistics)
            too. If ``False`` the buffers are copied from ``model`` at each
            update; :func:`update_bn` then recomputes BatchNorm's statistics
            for the averaged weights.

    The averaging functions are not saved in ``state_dict()``, which holds
    ``n_averaged`` and the copy's entries under ``module.``, as torch's.

    Example::

        swa_model = AveragedModel(model)
        swa_scheduler = SWALR(optimizer, swa_lr=0.05)
        for epoch in range(epochs):
            train_one_epoch(model, optimizer)
            if epoch >= swa_start:
                swa_model.update_parameters(model)
                swa_scheduler.step()
        update_bn(loader, swa_model)

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    """

    n_averaged: Tensor

    def __init__(
        self,
        model: Module,
        device: int | str | torch.device | None = None,
        avg_fn: AvgFn | None = None,
        multi_avg_fn: MultiAvgFn | None = None,
        use_buffers: bool = False,
    ) -> None:
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The averaged model's forward pass."""
        return self.module(*args, **kwargs)

    def _averaged_tensors(self, model: Module) -> Iterator[Tensor]:
        if self.use_buffers:
            return itertools.chain(model.parameters(), model.buffers())
        return model.parameters()

    def update_parameters(self, model: Module) -> None:
        """Take ``model``'s current weights into the average (the first call copies them).

        ``model`` must have the copy's structure: the same number of tensors,
        of the same shapes, in the same order. That is checked before anything
        changes (torch averages the tensors the two share, and fails after
        averaging if their buffers differ in number).
        """
        what = "parameters and buffers" if self.use_buffers else "parameters"
        averaged = [tensor.detach() for tensor in self._averaged_tensors(self.module)]
        current = [tensor.detach() for tensor in self._averaged_tensors(model)]
        _check_same_structure(what, averaged, current)
        # Unless averaged, the buffers follow the model's.
        own_buffers: list[Tensor] = []
        model_buffers: list[Tensor] = []
        if not self.use_buffers:
            own_buffers = [buffer.detach() for buffer in self.module.buffers()]
            model_buffers = [buffer.detach() for buffer in model.buffers()]
            _check_same_structure("buffers", own_buffers, model_buffers)
        current = [
            value.to(average.device) for average, value in zip(averaged, current, strict=True)
        ]

        if self.n_averaged == 0:
            for average, value in zip(averaged, current, strict=True):
                average.copy_(value)
        elif self.avg_fn is not None and self.multi_avg_fn is None:
            for average, value in zip(averaged, current, strict=True):
                average.copy_(self.avg_fn(average, value, self.n_averaged.to(average.device)))
        else:
            for _, (averages, values) in group_by_device_and_dtype([averaged, current]):
                self._average_bucket(averages, values)

        for own, theirs in zip(own_buffers, model_buffers, strict=True):
            own.copy_(theirs.to(own.device))
        self.n_averaged += 1

    def _average_bucket(self, averages: list[Tensor], values: list[Tensor]) -> None:
        """Tensors of one device and dtype, by ``multi_avg_fn`` or SWA's mean."""
        device = averages[0].device
        num_averaged = self.n_averaged.to(device)
        if self.multi_avg_fn is not None:
            self.multi_avg_fn(averages, values, num_averaged)
        elif device.type in FOREACH_DEVICE_TYPES:
            # torch's choice, kept so that the averages match it bit for bit: one
            # multi-tensor lerp on GPUs, the one-tensor formula elsewhere. They differ
            # in rounding (see get_swa_multi_avg_fn).
            get_swa_multi_avg_fn()(averages, values, num_averaged)
        else:
            swa_update = get_swa_avg_fn()
            for average, value in zip(averages, values, strict=True):
                average.copy_(swa_update(average, value, num_averaged))


def _check_same_structure(what: str, averaged: list[Tensor], current: list[Tensor]) -> None:
    """The model passed to update_parameters pairs up, tensor for tensor, with the copy."""
    if len(averaged) != len(current):
        raise ValueError(
            f"update_parameters: the model has {len(current)} {what}, the averaged model "
            f"{len(averaged)}; pass a model of the structure AveragedModel was built from"
        )
    for index, (average, value) in enumerate(zip(averaged, current, strict=True)):
        if average.shape != value.shape:
            raise ValueError(
                f"update_parameters: {what} {index} of the model has shape "
                f"{tuple(value.shape)}, the averaged model's {tuple(average.shape)}"
            )


# -------------------------------------------------------------------- SWALR


def _anneal_cos(t: float) -> float:
    return (1 - math.cos(math.pi * t)) / 2


def _anneal_linear(t: float) -> float:
    return t


class SWALR(LRScheduler):
    r"""Anneal each group's learning rate to a constant ``swa_lr`` in ``anneal_epochs`` steps.

    The schedule Stochastic Weight Averaging averages under (Izmailov et al.,
    2018, https://arxiv.org/abs/1803.05407; see :class:`AveragedModel`): from
    the rate :math:`\gamma_0` a group has when SWA starts, after :math:`t`
    calls of ``step()``,

    .. math::

        \gamma_t = (1 - \alpha_t)\,\gamma_0 + \alpha_t\,\gamma_{\text{swa}},
        \qquad \alpha_t = f\!\left(\min\!\left(1, \tfrac{t}{T}\right)\right),

    with :math:`T` = ``anneal_epochs`` and :math:`f(x) = \frac{1 - \cos\pi x}{2}`
    (``"cos"``) or :math:`f(x) = x` (``"linear"``); from step :math:`T` on the
    rate stays at :math:`\gamma_{\text{swa}}`. With :math:`T = 0` it is
    :math:`\gamma_{\text{swa}}` from construction on.

    The schedule is chainable, as torch's: each step recovers :math:`\gamma_0`
    from the group's current rate,
    :math:`\gamma_0 = (\gamma - \alpha_{t-1}\gamma_{\text{swa}}) / (1 - \alpha_{t-1})`,
    so that it anneals from wherever another scheduler left the rate. Typical
    use steps another scheduler until SWA starts, then this one:

    Example::

        scheduler = CosineAnnealingLR(optimizer, T_max=100)
        swa_scheduler = SWALR(optimizer, swa_lr=0.05, anneal_epochs=5)
        for epoch in range(300):
            train_one_epoch(model, optimizer)
            if epoch > 160:
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                scheduler.step()

    Args:
        optimizer: the optimizer (optimlib's or torch's); each group gets a
            ``"swa_lr"`` entry.
        swa_lr: the final learning rate, one for every group or a list with
            one per group.
        anneal_epochs: :math:`T`, the number of steps the annealing takes
            (an integer >= 0).
        anneal_strategy: ``"cos"`` or ``"linear"``.
        last_epoch: the index of the last step, to resume (-1 to start).

    A tensor ``lr`` in a group stays the same tensor, overwritten in place.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | Tensor | list[float] | list[Tensor],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = _swa_lrs(optimizer, swa_lr)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        # A bool would count as 1 (torch takes True); the project's schedulers refuse it.
        if (
            not isinstance(anneal_epochs, int)
            or isinstance(anneal_epochs, bool)
            or anneal_epochs < 0
        ):
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self._anneal_strategy = anneal_strategy
        self.anneal_epochs = anneal_epochs
        # torch leaves swa_lr in the groups when the base class then raises; put them back.
        before = [dict(group) for group in optimizer.param_groups]
        try:
            for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
                group["swa_lr"] = value
            super().__init__(optimizer, last_epoch)
        except BaseException:
            for group, saved in zip(optimizer.param_groups, before, strict=True):
                group.clear()
                group.update(saved)
            raise

    def anneal_func(self, t: float) -> float:
        """:math:`f(t)`, the fraction of the way to ``swa_lr`` at progress ``t`` in [0, 1]."""
        return _anneal_cos(t) if self._anneal_strategy == "cos" else _anneal_linear(t)

    def _progress(self, step: int) -> float:
        """:math:`\\min(1, t / T)`, and 0 before the first step."""
        return max(0, min(1, step / max(1, self.anneal_epochs)))

    def get_lr(self) -> list[Any]:
        """Every group's rate after this step (see the class docstring)."""
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, "
                "please use `get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        step = self._step_count - 1  # the initial step, taken on construction, is step 0
        if self.anneal_epochs == 0:
            step = max(1, step)
        previous_alpha = self.anneal_func(self._progress(step - 1))
        alpha = self.anneal_func(self._progress(step))
        rates = []
        for group in self.optimizer.param_groups:
            swa = group["swa_lr"]
            if previous_alpha == 1:
                start = swa
            else:
                start = (group["lr"] - previous_alpha * swa) / (1 - previous_alpha)
            rates.append(swa * alpha + start * (1 - alpha))
        return rates


def _swa_lrs(optimizer: Optimizer, swa_lr: Any) -> list[Any]:
    """One ``swa_lr`` per group, each a rate >= 0; tensors copied, numpy scalars made plain.

    A negative or NaN rate is refused (torch takes it and would ascend, or
    make the weights NaN). A numpy scalar would end up in the optimizer's
    state_dict, which ``torch.load(weights_only=True)`` then refuses.
    """
    groups = optimizer.param_groups
    if isinstance(swa_lr, (list, tuple)):
        if len(swa_lr) != len(groups):
            raise ValueError(
                "swa_lr must have the same length as optimizer.param_groups. "
                f"swa_lr has {len(swa_lr)} values, param_groups has {len(groups)}."
            )
        values = list(swa_lr)
    else:
        values = [swa_lr] * len(groups)
    for value in values:
        check_range("swa_lr", value, 0.0, math.inf, high_inclusive=False)
    return [value.clone() if isinstance(value, Tensor) else _plain(value) for value in values]


# ---------------------------------------------------------------- update_bn


def _running_stats(module: _BatchNorm) -> list[Tensor]:
    stats = (module.running_mean, module.running_var, module.num_batches_tracked)
    return [stat for stat in stats if stat is not None]


@torch.no_grad()
def update_bn(
    loader: Iterable[Any],
    model: Module,
    device: int | str | torch.device | None = None,
) -> None:
    r"""Recompute the running statistics of every BatchNorm layer in ``model`` over ``loader``.

    Averaged weights were never seen by a forward pass, so BatchNorm's running
    mean and variance (Ioffe and Szegedy, 2015) no longer fit them. One pass
    over the data in training mode, with each layer's ``momentum`` set to
    ``None``, makes them the plain average over the :math:`K` batches of the
    batch statistics,

    .. math::

        \hat\mu = \frac1K \sum_{k=1}^K \mu_k, \qquad
        \hat\sigma^2 = \frac1K \sum_{k=1}^K \sigma_k^2

    (:math:`\sigma_k^2` unbiased), and ``num_batches_tracked`` :math:`K`.
    The statistics are reset first, the momenta and every module's training
    mode restored afterwards.

    Args:
        loader: the batches: tensors, or lists or tuples whose first element
            is the input (``(x, y)`` pairs, a ``DataLoader``).
        model: called on each input; it may be an :class:`AveragedModel`.
        device: if given, each input is moved there first.

    If a batch fails, the statistics, momenta and modes are put back as they
    were and the error is raised. torch restores the top-level module's mode
    alone, which it applies to every submodule; here a submodule kept in
    ``eval`` mode stays so. A model without BatchNorm is left untouched.
    """
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    modes = [(module, module.training) for module in model.modules()]
    saved = [[stat.clone() for stat in _running_stats(norm)] for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: the cumulative average
    model.train()
    try:
        for batch in loader:
            inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                inputs = inputs.to(device)
            model(inputs)
    except BaseException:
        for norm, stats in zip(norms, saved, strict=True):
            for stat, value in zip(_running_stats(norm), stats, strict=True):
                stat.copy_(value)
        raise
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)  # as torch does, for a train() that does more than set flags
        for module, training in modes:
            module.training = training
