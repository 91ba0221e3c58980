"""Step time of optimlib against torch.optim, side by side in one run.

A model-like set of tensors (by default 100 tensors of 1k to 1M elements,
sizes spread log-uniformly) gets fresh random gradients once; then each
implementation takes steps on its own copy. Rounds interleave the
implementations, so a slow moment of the machine hits all of them alike, and
the median over rounds is reported with the ratio optimlib / torch.optim.

    python benchmarks/step_time.py                 # CPU
    python benchmarks/step_time.py --device cuda   # GPU, when present

This is a measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

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
}


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
    foreach: bool,
) -> Callable[[], None]:
    generator = torch.Generator().manual_seed(1)
    params = [
        torch.randn(n, generator=generator, dtype=dtype).to(device).requires_grad_() for n in sizes
    ]
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    optimizer = cls(params, **options, foreach=foreach)
    optimizer.step()  # create the state outside the timed region
    return optimizer.step


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
        f"{sum(sizes):,} in all; median of {args.rounds} rounds of {args.steps} steps\n"
    )
    header = f"{'case':<18}{'impl':<10}{'optimlib ms':>13}{'torch ms':>11}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name in args.cases:
        ours_cls, theirs_cls, options = CASES[name]
        for foreach in (False, True):
            steppers = {
                "optimlib": make_stepper(ours_cls, options, sizes, device, dtype, foreach),
                "torch": make_stepper(theirs_cls, options, sizes, device, dtype, foreach),
            }
            times: dict[str, list[float]] = {key: [] for key in steppers}
            for _ in range(args.rounds):
                for key, step in steppers.items():
                    times[key].append(time_steps(step, args.steps, device))
            ours = statistics.median(times["optimlib"]) * 1e3
            theirs = statistics.median(times["torch"]) * 1e3
            impl = "foreach" if foreach else "for-loop"
            print(f"{name:<18}{impl:<10}{ours:>13.3f}{theirs:>11.3f}{ours / theirs:>8.3f}")
            del steppers


if __name__ == "__main__":
    main()
