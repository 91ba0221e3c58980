"""Chapter 11, *Making step() fast*: bytes per parameter, traffic, bandwidth and timing.

The cost model of an optimizer step is the memory it moves. A step that keeps
``k`` state tensors the size of each parameter must at least read the
parameter, its gradient and the ``k`` states, and write the parameter and the
states back: ``(3 + 2k)`` numbers per parameter element
(:func:`minimum_bytes_per_element`). :class:`TrafficCounter` counts the bytes a
step's operations touch, one by one; :func:`interleaved_medians` times
several steps fairly on a shared machine, and :func:`streaming_in_place` gives
the in-place kernel whose time, next to theirs, measures the rate at which the
memory streams bytes through an element-wise step (:func:`copy_moving`, a
plain copy, for comparison).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def model_like_sizes(count: int, smallest: int, largest: int, seed: int = 0) -> list[int]:
    """``count`` tensor sizes spread log-uniformly over ``[smallest, largest]``, like a model's."""
    generator = torch.Generator().manual_seed(seed)
    fractions = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
    low, high = math.log(smallest), math.log(largest)
    return [round(math.exp(low + (high - low) * u)) for u in fractions]


def state_tensors_per_parameter(optimizer: torch.optim.Optimizer) -> int:
    """How many state tensors of a parameter's size the optimizer keeps for each parameter.

    Counted on its first parameter after at least one step; 0-d tensors such as
    ``step`` are not counted.
    """
    param = optimizer.param_groups[0]["params"][0]
    state = optimizer.state.get(param, {})
    return sum(
        1
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape == param.shape
    )


def minimum_bytes_per_element(state_tensors: int, element_size: int = 4) -> int:
    """Least memory traffic of one step per parameter element.

    Read the parameter, its gradient and each state tensor; write the
    parameter and each state tensor back.
    """
    return element_size * (3 + 2 * state_tensors)


class TrafficCounter(TorchDispatchMode):
    """Adds up the bytes each aten operation reads and writes, and lists the operations.

    Every tensor argument counts as read. Written: the arguments the operation's
    schema marks as mutated (``add_``, ``_foreach_add_``, ``_fused_adam_``) and
    the outputs that are new tensors rather than views of the inputs. It
    counts what kernels touch, not what caches save.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        #: (operation name, bytes it read and wrote), in the order they ran.
        self.operations: list[tuple[str, int]] = []

    @staticmethod
    def _size(value: Any) -> int:
        return sum(
            t.numel() * t.element_size() for t in tree_leaves(value) if isinstance(t, torch.Tensor)
        )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        named = dict(zip((a.name for a in schema.arguments), args, strict=False)) | kwargs
        moved = self._size((args, kwargs))
        for argument in schema.arguments:
            if argument.alias_info is not None and argument.alias_info.is_write:
                moved += self._size(named.get(argument.name))
        results = out if isinstance(out, tuple) else (out,)
        for declared, result in zip(schema.returns, results, strict=False):
            if declared.alias_info is None:
                moved += self._size(result)
        self.bytes += moved
        self.operations.append((func.overloadpacket.__name__, moved))
        return out


def measure_traffic(
    step: Callable[[], Any], elements: int
) -> tuple[float, list[tuple[str, float]]]:
    """Bytes per element one call of ``step`` moves, and each operation's share of them."""
    counter = TrafficCounter()
    with counter:
        step()
    shares = [(name, moved / elements) for name, moved in counter.operations]
    return counter.bytes / elements, shares


def fused_available(cls: type, **options: Any) -> bool:
    """Whether ``cls`` accepts ``fused=True`` (and can take a step with it) on the CPU."""
    param = torch.zeros(2, requires_grad=True)
    param.grad = torch.ones(2)
    try:
        cls([param], fused=True, **options).step()
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        return False
    return True


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], Any], calls: int, device: torch.device) -> float:
    """Wall-clock seconds per call, averaged over ``calls`` consecutive calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def interleaved_times(
    fns: dict[str, Callable[[], Any]], rounds: int, calls: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function in each round, the rounds taking turns.

    Each round times ``calls`` calls of every function in turn, so that a slow
    moment of a shared machine falls on all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds_per_call(fn, calls, device))
    return times


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], rounds: int, calls: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each function over :func:`interleaved_times`' rounds."""
    times = interleaved_times(fns, rounds, calls, device)
    return {name: statistics.median(values) for name, values in times.items()}


def copy_moving(nbytes: int, device: torch.device) -> Callable[[], Tensor]:
    """A ``copy_`` between two float32 buffers that reads and writes ``nbytes`` in all.

    Its target is only written; on a CPU, writing a cache line that was not
    read first usually costs a read as well (write-allocate), so a copy tends
    to stream fewer useful bytes per second than an in-place update does.
    """
    source = torch.randn(max(1, nbytes // 8), device=device)
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def streaming_in_place(nbytes: int, device: torch.device) -> Callable[[], Tensor]:
    """An in-place ``a.add_(b)`` on float32 buffers that reads and writes ``nbytes`` in all.

    It reads ``a`` and ``b`` and writes ``a`` (12 bytes an element): like an
    optimizer step, every line it writes it has just read, and it does no
    arithmetic to speak of, so its rate is the best an element-wise step can
    hope for from the memory.
    """
    a = torch.randn(max(1, nbytes // 12), device=device)
    b = torch.zeros_like(a)  # adding zeros keeps the values (and their speed) as they are
    return lambda: a.add_(b)


def kernel_arrays(code: str) -> tuple[int, set[str], set[str]]:
    """The C++ kernels in inductor's output ``code``, and the pointers they load and store.

    Counts the ``extern "C"`` kernel functions and collects the pointer
    arguments indexed by the loop variable ``x0`` in vector loads
    (``loadu(ptr + ...)``) and stores (``store(ptr + ...)``): the arrays that
    the generated loops stream through. Scalars (0-d tensors) are read as
    ``ptr[0]`` and are not among them.
    """
    kernels = code.count('extern "C"')
    index = r"(\w+_ptr\d+) \+ static_cast<int64_t>\(x0\)"
    loaded = set(re.findall(r"loadu\(" + index, code))
    stored = set(re.findall(r"store\(" + index, code))
    return kernels, loaded, stored


def gigabytes_per_second(bytes_per_element: float, elements: int, seconds: float) -> float:
    """The rate a step that moves ``bytes_per_element`` for each of ``elements`` achieves."""
    return bytes_per_element * elements / seconds / 1e9


def table(rows: Iterable[Iterable[Any]], header: Iterable[str], widths: Iterable[int]) -> str:
    """Rows as one text table: the first column left-aligned, the others right-aligned."""
    widths = list(widths)

    def line(cells: Iterable[Any]) -> str:
        texts = [str(cell) for cell in cells]
        if len(texts) != len(widths):
            raise ValueError(f"a row has {len(texts)} cells for {len(widths)} columns")
        parts = [texts[0].ljust(widths[0])]
        parts += [text.rjust(width) for text, width in zip(texts[1:], widths[1:], strict=True)]
        return " ".join(parts).rstrip()

    head = line(header)
    return "\n".join([head, "-" * len(head), *(line(row) for row in rows)])
