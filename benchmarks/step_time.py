"""Step time and memory traffic of optimlib against torch.optim, side by side in one run.

A model-like set of tensors (by default 100 tensors of 1k to 1M elements,
sizes spread log-uniformly) gets fresh random gradients once; then each
implementation takes steps on its own copy. Rounds interleave the
implementations, so a slow moment of the machine hits all of them alike, and
the median over rounds is reported with the ratio optimlib / torch.optim.

Each case runs every implementation both libraries have: the for-loop, the
foreach path and, for the four algorithms with torch fused kernels (SGD, Adam,
AdamW, Adagrad), ``fused=True``. "ratio" compares optimlib with torch.optim's
same implementation, "vs best" with torch.optim's fastest one for that case.

"bytes/elem" is the memory traffic of one step per parameter element: every
aten operation the step runs is intercepted, and the bytes of the tensors it
reads and writes are summed (an in-place add of a gradient into a parameter
reads two tensors and writes one). It counts what the kernels touch, not cache
effects, and is the same on any device. "GB/s" is optimlib's traffic over its
step time, next to the bandwidth of a plain copy measured on the same device
(the most a step that touches that many bytes could reach).

    python benchmarks/step_time.py                 # CPU
    python benchmarks/step_time.py --device cuda   # GPU, when present

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import optimlib

#: name -> (optimlib class, torch class, constructor options)
CASES: dict[str, tuple[type, type, dict]] = {
    "SGD": (optimlib.SGD, torch.optim.SGD, {"lr": 1e-3}),
    "SGD momentum": (optimlib.SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    "SGD nesterov+wd": (
        optimlib.SGD,
        torch.optim.SGD,
        {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    ),
    "Adam": (optimlib.Adam, torch.optim.Adam, {"lr": 1e-3}),
    "AdamW": (optimlib.AdamW, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
    "RMSprop": (optimlib.RMSprop, torch.optim.RMSprop, {"lr": 1e-3}),
    "Adagrad": (optimlib.Adagrad, torch.optim.Adagrad, {"lr": 1e-2}),
    "Adam amsgrad": (optimlib.Adam, torch.optim.Adam, {"lr": 1e-3, "amsgrad": True}),
    "Adadelta": (optimlib.Adadelta, torch.optim.Adadelta, {"lr": 1.0}),
    "Adamax": (optimlib.Adamax, torch.optim.Adamax, {"lr": 2e-3}),
    "NAdam": (optimlib.NAdam, torch.optim.NAdam, {"lr": 2e-3}),
    "RAdam": (optimlib.RAdam, torch.optim.RAdam, {"lr": 1e-3}),
    "ASGD": (optimlib.ASGD, torch.optim.ASGD, {"lr": 1e-2}),
    "Rprop": (optimlib.Rprop, torch.optim.Rprop, {"lr": 1e-2}),
    "Adafactor": (optimlib.Adafactor, torch.optim.Adafactor, {"lr": 1e-2}),
}


class TrafficCounter(TorchDispatchMode):
    """Sums the bytes every aten operation reads (its tensor inputs) and writes.

    Writes are the arguments the operation's schema marks as mutated (``add_``,
    ``_foreach_add_``) and the outputs that are new tensors, not views of inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    @staticmethod
    def _size(value) -> int:
        tensors = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        by_name = dict(zip((a.name for a in schema.arguments), args, strict=False)) | kwargs
        self.bytes += self._size((args, kwargs))
        for argument in schema.arguments:
            if argument.alias_info is not None and argument.alias_info.is_write:
                self.bytes += self._size(by_name.get(argument.name))
        results = out if isinstance(out, tuple) else (out,)
        for declared, result in zip(schema.returns, results, strict=False):
            if declared.alias_info is None:
                self.bytes += self._size(result)
        return out


def bytes_per_element(step: Callable[[], None], elements: int) -> float:
    counter = TrafficCounter()
    with counter:
        step()
    return counter.bytes / elements


def copy_bandwidth(elements: int, device: torch.device, dtype: torch.dtype, steps: int) -> float:
    """GB/s of ``copy_`` between two buffers of ``elements``: one read and one write each."""
    source = torch.randn(elements, dtype=dtype, device=device)
    target = torch.empty_like(source)
    seconds = min(time_steps(lambda: target.copy_(source), steps, device) for _ in range(3))
    return 2 * source.numel() * source.element_size() / seconds / 1e9


def implementations(ours: type) -> tuple[str, ...]:
    """for-loop and foreach always; fused where optimlib has a fused update."""
    has_fused = getattr(ours, "fused_update", None) is not None
    return ("for-loop", "foreach", "fused") if has_fused else ("for-loop", "foreach")


def torch_has_fused(theirs: type) -> bool:
    return "fused" in inspect.signature(theirs).parameters


def compiles_for_loop(ours: type) -> bool:
    """Whether optimlib's fused path is its compiled for-loop (``optimlib._compiled``)."""
    return getattr(ours.fused_update, "compiles_for_loop", False)


def state_tensors(optimizer: torch.optim.Optimizer) -> int:
    """Tensors of state the size of the parameter, for the first parameter."""
    param = optimizer.param_groups[0]["params"][0]
    entries = optimizer.state[param].values()
    return sum(isinstance(v, torch.Tensor) and v.shape == param.shape for v in entries)


def model_like_sizes(count: int, smallest: int, largest: int, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    exponents = torch.empty(count).uniform_(0, 1, generator=generator)
    low, high = torch.log(torch.tensor(float(smallest))), torch.log(torch.tensor(float(largest)))
    return [int(torch.exp(low + (high - low) * e)) for e in exponents]


def make_stepper(
    cls: type,
    options: dict,
    sizes: list[int],
    device: torch.device,
    dtype: torch.dtype,
    impl: str,
) -> Callable[[], None]:
    generator = torch.Generator().manual_seed(1)
    params = [
        torch.randn(n, generator=generator, dtype=dtype).to(device).requires_grad_() for n in sizes
    ]
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    choice = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    optimizer = cls(params, **options, **choice)
    start = time.perf_counter()
    optimizer.step()  # create the state (and compile) outside the timed region
    first_step_seconds = time.perf_counter() - start

    def step() -> None:
        optimizer.step()

    step.first_step_seconds = first_step_seconds  # type: ignore[attr-defined]
    step.optimizer = optimizer  # type: ignore[attr-defined]
    return step


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step, averaged over ``steps`` consecutive steps."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(optimlib.default_device()))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--tensors", type=int, default=100)
    parser.add_argument("--smallest", type=int, default=1_000)
    parser.add_argument("--largest", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sizes = model_like_sizes(args.tensors, args.smallest, args.largest)
    print(
        f"torch {torch.__version__}, optimlib {optimlib.__version__}, device {device}, "
        f"{args.dtype}, threads {torch.get_num_threads()}"
    )
    print(
        f"{len(sizes)} tensors, {min(sizes):,} to {max(sizes):,} elements, "
        f"{sum(sizes):,} in all; median of {args.rounds} rounds of {args.steps} steps"
    )
    bandwidth = copy_bandwidth(sum(sizes), device, dtype, args.steps)
    print(f"copy bandwidth: {bandwidth:.1f} GB/s\n")
    header = (
        f"{'case':<18}{'impl':<10}{'optimlib ms':>13}{'torch ms':>11}{'ratio':>8}"
        f"{'vs best':>9}{'optimlib bytes/elem':>21}{'torch bytes/elem':>18}{'GB/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in args.cases:
        ours_cls, theirs_cls, options = CASES[name]
        rows = []
        notes = []
        for impl in implementations(ours_cls):
            # Where torch has no fused path, optimlib's fused step races torch's foreach.
            their_impl = "foreach" if impl == "fused" and not torch_has_fused(theirs_cls) else impl
            steppers = {
                "optimlib": make_stepper(ours_cls, options, sizes, device, dtype, impl),
                "torch": make_stepper(theirs_cls, options, sizes, device, dtype, their_impl),
            }
            times: dict[str, list[float]] = {key: [] for key in steppers}
            for _ in range(args.rounds):
                for key, step in steppers.items():
                    times[key].append(time_steps(step, args.steps, device))
            ours = statistics.median(times["optimlib"]) * 1e3
            theirs = statistics.median(times["torch"]) * 1e3
            traffic = {}
            for key, step in steppers.items():
                if key == "optimlib" and impl == "fused" and compiles_for_loop(ours_cls):
                    # Compiled code is opaque to the counter: the cost model's minimum,
                    # which its one loop per tensor moves (Chapter 11 reads the code).
                    element = torch.empty((), dtype=dtype).element_size()
                    traffic[key] = element * (3 + 2 * state_tensors(step.optimizer))
                    first = step.first_step_seconds
                    notes.append(f"{name}: optimlib's compiled fused first step {first:.1f} s")
                else:
                    traffic[key] = bytes_per_element(step, sum(sizes))
            label = impl if their_impl == impl else "fused/fe"
            rows.append((label, ours, theirs, traffic))
            del steppers
        best = min(theirs for _, _, theirs, _ in rows)
        for impl, ours, theirs, traffic in rows:
            rate = traffic["optimlib"] * sum(sizes) / (ours / 1e3) / 1e9
            print(
                f"{name:<18}{impl:<10}{ours:>13.3f}{theirs:>11.3f}{ours / theirs:>8.3f}"
                f"{ours / best:>9.3f}{traffic['optimlib']:>21.1f}{traffic['torch']:>18.1f}"
                f"{rate:>8.1f}"
            )
        for note in notes:
            print(f"  {note}")
    print(
        "\nfused/fe: optimlib's compiled fused step against torch's foreach step (torch has\n"
        "no fused path there); its bytes/elem is the cost model's minimum, not a count."
    )


if __name__ == "__main__":
    main()
