"""Step time, memory traffic and peak memory of optimlib against torch.optim, side by side.

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

A second table gives memory. "peak" is the memory one step needs beyond what
exists before it (parameters, gradients and state, already created by warm-up
steps, which also compile): the high-water mark of its temporaries, in bytes
per parameter element; "state" is the bytes of the optimizer's state tensors
after the step, per element. Each case is measured in a fresh process,
implementation after implementation, each after three warm-up steps and as the
median of three measured steps; a "!" marks a peak of optimlib's above
torch.optim's by more than the resolution, :data:`MEMORY_RESOLUTION` (1 MiB).

- On a GPU, the caching allocator's counters: ``max_memory_allocated`` after
  ``reset_peak_memory_stats``, less ``memory_allocated`` before the step.
- On the CPU there is no allocator statistic, so the process's peak resident
  memory is read instead: ``VmHWM`` in ``/proc/self/status`` after writing
  "5" to ``/proc/self/clear_refs`` (which resets it to the current resident
  size, ``VmRSS``), less ``VmRSS`` before the step (Linux only). Resident
  memory follows the tensors only if freed ones leave it, so the measuring
  process first tells glibc (``mallopt``) to map every allocation of a page
  or more on its own, and to unmap it when it is freed, rather than keep it
  for reuse (its default for sizes it has seen freed), and releases freed
  heap memory (``malloc_trim``) before each measured step. Its limits: pages
  (4 KiB) are the unit; glibc still serves some allocations from its heap
  (those under a page, and larger ones that fit a free block there), and
  what is freed there during the step stays counted; whatever else the step
  allocates (Python objects) is counted too; and the kernel's resident
  counts are approximate by a few hundred KiB. At the default sizes (13.7M
  elements) the for-loop and foreach peaks came within 0.03 bytes/element of
  an exact count of the tensors aten operations created (below); a
  calibration step that allocates one temporary per element (4 bytes in
  float32) is measured first and printed.

  A dispatch mode that follows the tensors aten operations create (as
  "bytes/elem" counts traffic), freeing them with weak-reference finalizers,
  is exact where it sees the operations, but it sees neither the buffers
  inside a kernel nor those of compiled code: under one, optimlib's compiled
  fused steps run their operations eagerly, so it would measure other code
  than the one timed. Resident memory measures every implementation the same
  way.

    python benchmarks/step_time.py                 # CPU
    python benchmarks/step_time.py --device cuda   # GPU, when present
    python benchmarks/step_time.py --no-memory     # times only
    python benchmarks/step_time.py --memory-only   # memory only

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import inspect
import json
import statistics
import subprocess
import sys
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


#: Peaks closer than this (bytes) are not told apart: see the docstring.
MEMORY_RESOLUTION = 2**20
#: glibc's ``mallopt`` parameter for the size from which it maps each allocation.
M_MMAP_THRESHOLD = -3
#: Page size on Linux: allocations this large or larger are mapped on their own.
PAGE = 4096


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


def pairs(ours: type, theirs: type) -> list[tuple[str, str, str]]:
    """(optimlib's implementation, torch's, row label) for each row of a case.

    Where torch has no fused path, optimlib's fused step is set against torch's
    foreach step, in a row labelled "fused/fe".
    """
    rows = []
    for impl in implementations(ours):
        their_impl = "foreach" if impl == "fused" and not torch_has_fused(theirs) else impl
        rows.append((impl, their_impl, impl if their_impl == impl else "fused/fe"))
    return rows


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


def map_each_allocation() -> None:
    """Have glibc map every allocation of a page or more on its own, and unmap it
    when freed, so that the resident size follows the live tensors."""
    libc = ctypes.CDLL("libc.so.6")
    if not libc.mallopt(M_MMAP_THRESHOLD, PAGE):
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) failed")


def status_bytes(field: str) -> int:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_extra_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Bytes one call of ``step`` needs at its peak beyond what was allocated before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        raise RuntimeError(f"peak memory is measured on CUDA and on Linux CPUs, not {device}")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    step()
    return max(status_bytes("VmHWM") - before, 0)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state."""
    return sum(
        value.nbytes
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def calibration_peak(sizes: list[int], device: torch.device, dtype: torch.dtype) -> float:
    """Peak bytes/elem of a step known to need one temporary per element (its dtype's size)."""
    params = [torch.zeros(n, dtype=dtype, device=device) for n in sizes]
    grads = [torch.ones_like(param) for param in params]

    def step() -> None:
        torch._foreach_add_(params, torch._foreach_mul(grads, 2.0))

    step()
    return statistics.median(peak_extra_bytes(step, device) for _ in range(3)) / sum(sizes)


def measure_memory(
    name: str, sizes: list[int], device: torch.device, dtype: torch.dtype
) -> list[dict]:
    """Peak and state bytes/elem of each implementation of a case, for both libraries."""
    ours_cls, theirs_cls, options = CASES[name]
    rows = []
    for impl, their_impl, label in pairs(ours_cls, theirs_cls):
        row: dict = {"impl": label}
        for key, cls, which in (("optimlib", ours_cls, impl), ("torch", theirs_cls, their_impl)):
            step = make_stepper(cls, options, sizes, device, dtype, which)
            step()
            step()  # three warm-up steps in all, the first in make_stepper
            peak = statistics.median(peak_extra_bytes(step, device) for _ in range(3))
            row[key] = {
                "peak": peak / sum(sizes),
                "state": state_bytes(step.optimizer) / sum(sizes),  # type: ignore[attr-defined]
            }
            del step
        rows.append(row)
    return rows


def memory_in_fresh_process(name: str, args: argparse.Namespace) -> dict:
    """:func:`measure_memory` of one case, in a process of its own (``--memory-worker``)."""
    command = [sys.executable, __file__, "--memory-worker", "--cases", name]
    for option in ("device", "dtype", "tensors", "smallest", "largest"):
        command += [f"--{option}", str(getattr(args, option))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory pass of {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def memory_worker(args: argparse.Namespace) -> None:
    """Measure memory for ``args.cases`` and print the result as one line of JSON."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cpu":
        map_each_allocation()  # before any tensor exists
    sizes = model_like_sizes(args.tensors, args.smallest, args.largest)
    result = {
        "calibration": calibration_peak(sizes, device, dtype),
        "cases": {name: measure_memory(name, sizes, device, dtype) for name in args.cases},
    }
    print(json.dumps(result))


def print_memory(args: argparse.Namespace, sizes: list[int], dtype: torch.dtype) -> None:
    """The memory table: one fresh process per case."""
    element = torch.empty((), dtype=dtype).element_size()
    resolution = MEMORY_RESOLUTION / sum(sizes)  # in bytes per element
    header = (
        f"{'case':<18}{'impl':<10}{'optimlib peak':>15}{'torch peak':>12}{'ratio':>8}"
        f"{'':>2}{'optimlib state':>16}{'torch state':>13}"
    )
    for index, name in enumerate(args.cases):
        result = memory_in_fresh_process(name, args)
        if index == 0:
            print(
                "memory in bytes per parameter element "
                f"(1 byte/elem = {sum(sizes) / 1e6:.1f} MB here)\n"
                "peak: what one step needs beyond parameters, gradients and state; "
                "state: the optimizer's state tensors\n"
                f"calibration, a step with one temporary per element: "
                f"{result['calibration']:.2f} (expected {element})\n"
            )
            print(header)
            print("-" * len(header))
        for row in result["cases"][name]:
            ours, theirs = row["optimlib"], row["torch"]
            # A ratio to a peak within the resolution of zero would be noise.
            resolved = theirs["peak"] > resolution
            ratio = f"{ours['peak'] / theirs['peak']:.2f}" if resolved else "-"
            higher = "!" if ours["peak"] > theirs["peak"] + resolution else ""
            print(
                f"{name:<18}{row['impl']:<10}{ours['peak']:>15.2f}{theirs['peak']:>12.2f}"
                f"{ratio:>8}{higher:>2}{ours['state']:>16.2f}{theirs['state']:>13.2f}"
            )
    print(
        "\n!: optimlib's peak above torch's by more than the resolution, "
        f"{MEMORY_RESOLUTION / 2**20:g} MiB "
        f"({resolution:.2f} bytes/elem here);\n"
        "fused/fe: optimlib's compiled fused step against torch's foreach step."
    )


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
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory too (a fresh process per case)",
    )
    parser.add_argument("--memory-only", action="store_true", help="skip the timing")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args)
        return

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sizes = model_like_sizes(args.tensors, args.smallest, args.largest)
    print(
        f"torch {torch.__version__}, optimlib {optimlib.__version__}, device {device}, "
        f"{args.dtype}, threads {torch.get_num_threads()}"
    )
    rounds = "" if args.memory_only else f"; median of {args.rounds} rounds of {args.steps} steps"
    print(
        f"{len(sizes)} tensors, {min(sizes):,} to {max(sizes):,} elements, "
        f"{sum(sizes):,} in all{rounds}"
    )
    if not args.memory_only:
        print_times(args, sizes, device, dtype)
    if args.memory or args.memory_only:
        print_memory(args, sizes, dtype)


def print_times(
    args: argparse.Namespace, sizes: list[int], device: torch.device, dtype: torch.dtype
) -> None:
    """The timing table (with bytes moved), one case after another."""
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
        for impl, their_impl, label in pairs(ours_cls, theirs_cls):
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
        "no fused path there); its bytes/elem is the cost model's minimum, not a count.\n"
    )


if __name__ == "__main__":
    main()
