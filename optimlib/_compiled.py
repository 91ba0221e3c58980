"""``fused=True`` without a hand-written kernel: the for-loop, compiled.

torch ships fused kernels for four algorithms only (``optimlib._fused``). For
every other first-order optimizer, optimlib's fused path hands the readable
for-loop itself to ``torch.compile``, whose compiler (Inductor) turns the chain
of element-wise operations on each tensor into one loop that reads and writes
each array once. The for-loop stays the source of truth: the arithmetic is
written once, and what runs only while it is compiled (the helpers' tensor
forms, ``torch.where`` for a branch on a value) is held to the eager for-loop
by ``tests/library/test_compiled_fused.py``.

How the compiled code is kept small, and free of recompilation:

- **One graph serves every model.** The for-loop is compiled for a *chunk* of
  tensors, not for the whole model (compiling RMSprop's whole step for 60
  tensors as one graph took 63 s on a 2-core CPU). A chunk holds at most :data:`CHUNK` tensors;
  the rest of a bucket is split into chunks of 4, 2 and 1, so at most four
  graphs exist per configuration, whatever the number of parameters. Each
  tensor is viewed as one-dimensional and compiled with a symbolic size of
  its own (``dynamic=True``, without "duck" shapes, which would give tensors
  of equal size one symbol and a guard), so one graph serves tensors of
  every size and shape.
- **Values that change are tensors.** The learning rate (``tensors``) reaches
  the compiled code as a 0-d float64 tensor, and the step counts as float64
  copies of the counters (``advance``, ``as_number``), so a scheduler's new
  ``lr`` and each new step reuse the same code. Every other option is a
  constant of the compiled code, guarded by its value: a branch of the for-loop
  (``momentum > 0``, ``centered``) is then decided once, and a change (a
  second group's own betas, a schedule of the momentum) compiles again.
- **No number-only argument gets a tensor.** Given a tensor where an
  operation takes a Python number (``alpha=``, ``value=``), torch 2.14's
  compiler sometimes bakes the first value into the code, without a guard.
  The for-loops go through helpers (``add_scaled_``, ``addcdiv_scaled_``,
  ``lerp_toward_`` in ``optimlib._functional``) that multiply instead while
  this path is traced; ``larger`` and ``smaller`` take ``torch.maximum`` and
  ``torch.minimum``, and RAdam and ASGD choose with ``torch.where`` where
  their for-loops branch on a value. Scales derived from the step count are
  kept as graph outputs (``computed_once``), so that they are computed once
  per tensor rather than once per element.
- **Tensors the compiled loop would specialise on run the for-loop**:
  tensors with fewer than two elements (the compiler treats sizes 0 and 1 as
  constants), tensors whose parameter, gradient or state is not contiguous, parameters
  listed twice in a group, and DTensors (FSDP2's shards). On a GPU the
  for-loop reads each tensor's step counter on the host (a synchronisation),
  since a fused group keeps its counters on the device, unless the group is
  also capturable: then it computes with the counts as tensors.

``grad_scale`` and ``found_inf`` follow torch's fused kernels: gradients are
divided by ``grad_scale`` in place (inside the compiled loop), and nothing
changes when ``found_inf`` is set. Reading ``found_inf`` costs one host
synchronisation per group on a GPU, as ``GradScaler`` itself pays for an
optimizer without a fused path.

The compiled code is kept in torch's on-disk cache, so a second process
compiles from cache in a fraction of the first's time.
"""

from __future__ import annotations

import collections
import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlib import _functional
from optimlib._foreach import group_by_device_and_dtype, is_dtensor
from optimlib._functional import fused_tracing

#: The largest number of tensors one compiled call updates.
CHUNK = 8
#: Room for the graphs of one algorithm's chunk sizes, dtypes, options and groups.
_RECOMPILE_LIMIT = 64


def chunk_sizes(count: int, largest: int = CHUNK) -> list[int]:
    """Split ``count`` tensors into chunks of ``largest`` (a power of two), then of
    halving sizes, at most one of each."""
    sizes = [largest] * (count // largest)
    rest = count % largest
    size = largest // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def _flat(value: Any, flatten: bool) -> Any:
    """A tensor, detached, and as a vector if it has two or more dimensions.

    Detached, so that the compiler sees plain tensors whatever requires grad
    (a fused step is never differentiable); a 0-d counter keeps its shape.
    """
    if not isinstance(value, Tensor):
        return value
    value = value.detach()
    return value.view(-1) if flatten and value.dim() > 1 else value


def _compilable(param: Tensor, entries: list[Any]) -> bool:
    """Whether a parameter, its gradient and its state go to the compiled code."""
    if param.numel() < 2 or is_dtensor(param):
        return False
    return all(not isinstance(t, Tensor) or t.dim() == 0 or t.is_contiguous() for t in entries)


def _unscale_and_update(
    for_loop: Callable[..., None],
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Any]],
    grad_scale: Tensor | None,
    hyperparameters: dict[str, Any],
) -> None:
    """The function ``torch.compile`` sees: unscaling, then the for-loop, on one chunk."""
    if grad_scale is not None:
        for grad in grads:
            grad.div_(grad_scale)
    for_loop(params, grads, *states, **hyperparameters)


@functools.cache
def _compiled(for_loop: Callable[..., None]) -> Callable[..., None]:
    """``_unscale_and_update`` compiled, with a code object of its own for each for-loop.

    torch.compile keeps its compiled graphs, and counts them against its
    recompile limit, per code object: a copy per algorithm keeps one
    algorithm's graphs from crowding out another's.
    """
    code = _unscale_and_update.__code__.replace(co_name=f"_update_{for_loop.__name__}")
    function = types.FunctionType(code, _unscale_and_update.__globals__, code.co_name)
    return torch.compile(function, dynamic=True)


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    return torch.tensor(float(value), dtype=torch.float64)


def compiled_fused(
    for_loop: Callable[..., None],
    *,
    flatten: bool = True,
    tensors: tuple[str, ...] = ("lr",),
    chunk: int = CHUNK,
) -> Callable[..., None]:
    """The fused update of ``for_loop``: its signature plus ``grad_scale`` and ``found_inf``.

    ``tensors`` names the hyperparameters passed to the compiled code as 0-d
    tensors, those that change from step to step (a scheduled ``lr``).
    ``flatten=False`` keeps each tensor's shape, for a for-loop that branches on
    it (Adafactor factors the second moment of a matrix); then one graph is
    compiled per number of dimensions as well. ``chunk`` is the largest number
    of tensors per compiled call (a power of two); a smaller one compiles
    faster, for a for-loop with much code per tensor.
    """

    def fused(
        params: list[Tensor],
        grads: list[Tensor],
        *states: list[Any],
        grad_scale: Tensor | None = None,
        found_inf: Tensor | None = None,
        **hyperparameters: Any,
    ) -> None:
        if found_inf is not None and bool(found_inf):
            return
        if torch.compiler.is_compiling():  # already inside a compiled step: trace it there
            _unscale_and_update(for_loop, params, grads, list(states), grad_scale, hyperparameters)
            return
        compiled = {
            name: _as_tensor(value) if name in tensors else value
            for name, value in hyperparameters.items()
        }
        # specialize_float: a number that is not one of ``tensors`` is a constant of
        # the compiled code, guarded by its value. (torch 2.14's symbolic floats
        # gave wrong results for a second group with another ``rho``.)
        # use_duck_shape=False: two tensors of equal size in a chunk get a size
        # symbol each, so that the graph serves chunks whose sizes differ.
        settings = {"recompile_limit": _RECOMPILE_LIMIT, "specialize_float": True}
        with (
            torch._dynamo.config.patch(settings),
            torch.fx.experimental._config.patch(use_duck_shape=False),  # type: ignore[attr-defined]
            fused_tracing(),
        ):
            for _, (p, g, *s) in group_by_device_and_dtype([params, grads, *states]):
                _update_bucket(
                    for_loop, flatten, chunk, p, g, s, grad_scale, hyperparameters, compiled
                )

    fused.compiles_for_loop = True  # type: ignore[attr-defined]
    fused.__name__ = for_loop.__name__.replace("_for_loop", "_fused")
    fused.__qualname__ = fused.__name__
    fused.__doc__ = f":func:`{for_loop.__module__}.{for_loop.__name__}`, compiled (``fused=True``)."
    fused.__module__ = for_loop.__module__
    signature = inspect.signature(for_loop)
    amp = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Tensor | None
        )
        for name in ("grad_scale", "found_inf")
    ]
    fused.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *amp]
    )
    return fused


def _update_bucket(
    for_loop: Callable[..., None],
    flatten: bool,
    chunk: int,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Any]],
    grad_scale: Tensor | None,
    hyperparameters: dict[str, Any],
    compiled_hyperparameters: dict[str, Any],
) -> None:
    """One device and dtype: compiled chunks, and the for-loop for the tensors left over.

    The for-loop gets the hyperparameters as the group holds them; the compiled
    code gets those that change from step to step as tensors.
    """
    scale = None if grad_scale is None else grad_scale.to(params[0].device, non_blocking=True)
    lists = (params, grads, *states)
    # A parameter listed twice is updated twice in turn, which only the for-loop does.
    counts = collections.Counter(id(param) for param in params)
    compiled = [
        i
        for i, param in enumerate(params)
        if counts[id(param)] == 1 and _compilable(param, [entries[i] for entries in lists])
    ]
    chosen = set(compiled)
    leftover = [i for i in range(len(params)) if i not in chosen]
    if leftover:
        picked = [[entries[i] for i in leftover] for entries in lists]
        _unscale_and_update(for_loop, picked[0], picked[1], picked[2:], scale, hyperparameters)
    # Unflattened tensors are chunked by number of dimensions, so that chunks
    # repeat a few kinds of graph rather than every mix of them.
    groups: dict[int, list[int]] = {}
    for i in compiled:
        groups.setdefault(0 if flatten else params[i].dim(), []).append(i)
    for members in groups.values():
        start = 0
        for size in chunk_sizes(len(members), chunk):
            indices = members[start : start + size]
            start += size
            chunk_lists = [[_flat(entries[i], flatten) for i in indices] for entries in lists]
            try:
                _compiled(for_loop)(
                    for_loop, *chunk_lists[:2], chunk_lists[2:], scale, compiled_hyperparameters
                )
            finally:
                _functional._scales.clear()
