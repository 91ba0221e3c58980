"""The runs of Chapter 12, *Optimizers on many machines*, on CPU processes that talk over gloo.

A notebook cell cannot be the body of a spawned process: the child imports
the function it runs by its module and name. So the chapter's distributed code
lives here, and the chapter calls :func:`launch`, which starts the processes,
bounds their time and hands back what each rank returned::

    results = launch(distributed_runs, world_size=2, checkpoint_dir="ckpt")

With ``world_size=1``, :func:`launch` runs the function in the calling process,
in a one-rank process group, so that the one-process figures come from the very
same code. Every model here is tiny and in float64, so that a sharded run can
be held to a single-process one at rounding level.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

import optimlib
from optimlib.muon import (
    DEFAULT_EPS,
    DEFAULT_NS_COEFFICIENTS,
    DEFAULT_NS_STEPS,
    Muon,
    orthogonalize,
)

#: Spawning two processes that import torch takes several seconds on two busy cores.
DEFAULT_TIMEOUT_S = 240.0
#: How long a collective may wait for the other rank before it raises.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


# ---------------------------------------------------------------------------
# Starting processes
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for the processes' rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_rank(
    rank: int,
    world_size: int,
    port: int,
    result_dir: str,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
) -> None:
    torch.set_num_threads(1)  # two processes share two cores: one thread each
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        result = fn(rank, world_size, **kwargs)
        torch.save(result, Path(result_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(rank, world_size, **kwargs)`` on ``world_size`` gloo ranks; return each's result.

    ``fn`` must be importable (a module-level function) and return what
    ``torch.save`` can store. With ``world_size > 1`` the ranks are spawned
    processes with one thread each; a rank that fails re-raises its error
    here, and if they are not done within ``timeout_s`` seconds they are
    killed and ``TimeoutError`` is raised. With ``world_size == 1`` ``fn``
    runs here, in a one-rank group that is destroyed afterwards.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if world_size == 1:
        if dist.is_initialized():
            raise RuntimeError("a process group is already initialized in this process")
        dist.init_process_group(
            "gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT
        )
        try:
            return [fn(0, 1, **kwargs)]
        finally:
            dist.destroy_process_group()
    with tempfile.TemporaryDirectory() as result_dir:
        context = torch.multiprocessing.start_processes(
            _run_rank,
            args=(world_size, free_port(), result_dir, fn, kwargs),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout_s
        # join() re-raises a failed rank's exception, with its traceback.
        while not context.join(timeout=0.5):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"the {world_size} processes did not finish in {timeout_s} s")
        return [
            torch.load(Path(result_dir) / f"rank{rank}.pt", weights_only=False)
            for rank in range(world_size)
        ]


# ---------------------------------------------------------------------------
# Models, data and plain training
# ---------------------------------------------------------------------------

#: The chapter's batch: 16 examples of 8 features, 4 targets.
BATCH, FEATURES, HIDDEN, TARGETS = 16, 8, 16, 4


def mlp(seed: int = 0, bias: bool = True) -> nn.Sequential:
    """A float64 network 8 -> 16 -> 16 -> 4 with tanh, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN, bias=bias),
        nn.Tanh(),
        nn.Linear(HIDDEN, HIDDEN, bias=bias),
        nn.Tanh(),
        nn.Linear(HIDDEN, TARGETS, bias=bias),
    ).double()


def batches(steps: int, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    """``steps`` fixed batches of ``BATCH`` float64 examples: a different batch per step."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(BATCH, FEATURES, generator=generator, dtype=torch.float64),
            torch.randn(BATCH, TARGETS, generator=generator, dtype=torch.float64),
        )
        for _ in range(steps)
    ]


def my_part(tensor: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous share of a batch (the rows a data loader would give it)."""
    return tensor.chunk(world_size)[rank]


def loss_fn(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.mse_loss(model(inputs), targets)


def train(model: nn.Module, optimizer: Any, data: list[tuple[Tensor, Tensor]]) -> None:
    """One optimizer step per batch, on the whole batch: the single-process reference."""
    for inputs, targets in data:
        optimizer.zero_grad()
        loss_fn(model, inputs, targets).backward()
        optimizer.step()


def whole(tensor: Tensor) -> Tensor:
    """A detached copy of the full tensor, gathered if it is a DTensor."""
    full = getattr(tensor, "full_tensor", None)
    return (full() if callable(full) else tensor).detach().clone()


def weights(model: nn.Module) -> list[Tensor]:
    return [whole(p) for p in model.parameters()]


def max_difference(first: list[Tensor], second: list[Tensor]) -> float:
    """The largest elementwise difference between two lists of tensors of equal shapes."""
    return max((a - b).abs().max().item() for a, b in zip(first, second, strict=True))


def local_bytes(tensors: Any) -> int:
    """Bytes this process holds for ``tensors``: a DTensor counts its local shard only."""
    total = 0
    for tensor in tensors:
        if not torch.is_tensor(tensor):
            continue
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state this process holds (DTensor state counts its shard)."""
    return local_bytes(value for state in optimizer.state.values() for value in state.values())


def shard_model(model: nn.Module) -> nn.Module:
    """FSDP2: every Linear and the whole model ``fully_shard``-ed over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for module in model:
        if isinstance(module, nn.Linear):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# ---------------------------------------------------------------------------
# Data parallelism
# ---------------------------------------------------------------------------


def average_gradients(model: nn.Module) -> None:
    """Data parallelism by hand: each gradient becomes its mean over the ranks."""
    world_size = dist.get_world_size()
    for param in model.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad /= world_size


def data_parallel_run(
    rank: int,
    world_size: int,
    steps: int,
    by_hand: bool,
) -> list[Tensor]:
    """AdamW on each rank's share of every batch, gradients averaged by hand or DDP."""
    model: nn.Module = mlp()
    if not by_hand:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = optimlib.AdamW(model.parameters(), lr=0.01)
    for inputs, targets in batches(steps):
        optimizer.zero_grad()
        mine = my_part(inputs, rank, world_size), my_part(targets, rank, world_size)
        loss_fn(model, *mine).backward()  # DDP averages the gradients in here
        if by_hand:
            average_gradients(model)
        optimizer.step()
    return weights(model)


def single_process_adamw(steps: int) -> list[Tensor]:
    """The reference of :func:`data_parallel_run`: the whole batch in one process."""
    model = mlp()
    train(model, optimlib.AdamW(model.parameters(), lr=0.01), batches(steps))
    return weights(model)


# ---------------------------------------------------------------------------
# Where optimizer state lives
# ---------------------------------------------------------------------------


def state_model() -> nn.Sequential:
    """Four float32 32 x 32 layers without biases: 4096 weights that split evenly."""
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(32, 32, bias=False) for _ in range(4)))


def measure_memory(rank: int, world_size: int) -> dict[str, dict[str, int]]:
    """Bytes of weights, gradients and Adam state per rank: plain, ZeRO-1, FSDP2.

    ZeRO-1 is ``ZeroRedundancyOptimizer`` over a DDP model, so that the
    gradients are averaged as in training; stage 2 has no class of its own here.
    """
    from torch.distributed.optim import ZeroRedundancyOptimizer

    inputs = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    figures = {}
    for name in ("replicated", "zero1", "fsdp2"):
        model: nn.Module = state_model()
        if name == "fsdp2":
            model = shard_model(model)
        if name == "zero1":
            model = nn.parallel.DistributedDataParallel(model)
            optimizer: Any = ZeroRedundancyOptimizer(
                model.parameters(), optimizer_class=optimlib.Adam, lr=1e-3
            )
        else:
            optimizer = optimlib.Adam(model.parameters(), lr=1e-3)
        model(inputs).square().mean().backward()
        optimizer.step()
        local = optimizer.optim if name == "zero1" else optimizer
        figures[name] = {
            "params": local_bytes(model.parameters()),
            "grads": local_bytes(p.grad for p in model.parameters()),
            "state": state_bytes(local),
            "state_tensors": sum(len(s) for s in local.state.values()),
        }
    return figures


# ---------------------------------------------------------------------------
# DTensor parameters
# ---------------------------------------------------------------------------


def dtensor_facts(rank: int, world_size: int) -> dict[str, Any]:
    """What an optimizer sees of one FSDP2 parameter, and which computations need the others."""
    model = shard_model(mlp())
    weight = model[0].weight  # 16 x 8, its rows split over the ranks
    inputs, targets = batches(1)[0]
    loss_fn(model, inputs, targets).backward()
    grad = weight.grad
    local = grad.to_local()
    facts: dict[str, Any] = {
        "type": type(weight).__name__,
        "placements": str(weight.placements),
        "shape": tuple(weight.shape),
        "local_shape": tuple(weight.to_local().shape),
        "zeros_like": f"{type(torch.zeros_like(weight)).__name__} "
        f"{tuple(torch.zeros_like(weight).to_local().shape)}",
        "local_norm": local.norm().item(),
        # The norm is a DTensor holding a pending reduction over the ranks;
        # .item() reads this rank's local value, full_tensor() reduces first.
        "norm_placements": str(grad.norm().placements),
        "norm_item": grad.norm().item(),
        "global_norm": grad.norm().full_tensor().item(),
        "full_grad": grad.full_tensor(),
        "local_column_norms": local.norm(dim=0),
    }
    try:
        torch.zeros(weight.shape, dtype=weight.dtype).add_(grad)
        facts["zeros_of_shape"] = "worked"
    except Exception as error:  # a plain tensor of the global shape cannot meet a DTensor
        facts["zeros_of_shape"] = f"{type(error).__name__}"
    return facts


# ---------------------------------------------------------------------------
# Muon under FSDP2
# ---------------------------------------------------------------------------


def muon_model() -> nn.Sequential:
    """A float64 network whose every parameter is a matrix, for Muon alone."""
    return mlp(seed=2, bias=False)


def muon_data(steps: int) -> list[tuple[Tensor, Tensor]]:
    return batches(steps, seed=3)


def newton_schulz_without_cast(
    matrix: Tensor, coefficients: Sequence[float], steps: int, eps: float
) -> Tensor:
    """torch.optim.Muon's Newton-Schulz iteration in the matrix's own dtype, not bfloat16.

    Only for the chapter's check of where torch's sharded gap comes from.
    """
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.T if tall else matrix
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


@contextlib.contextmanager
def torch_muon_without_bfloat16() -> Iterator[None]:
    """Within this block, torch.optim.Muon orthogonalizes in its inputs' dtype."""
    from torch.optim import _muon

    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = newton_schulz_without_cast
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


def sharded_muon_run(rank: int, world_size: int, steps: int) -> dict[str, Any]:
    """Muon on FSDP2 row shards; every rank sees the whole batch, to isolate the optimizer.

    With the same batch on every rank FSDP's averaged gradient, (g + g) / 2,
    is the single-process gradient bit for bit, so any gap to a single-process
    run is the optimizer's. Runs optimlib's Muon, torch's, and torch's with
    Newton-Schulz in float64 (``"torch_float64"``). Also returns Newton-Schulz
    applied to this rank's shard of the first step's direction (the Nesterov
    direction ``grad.lerp(momentum_buffer, 0.95)``) alone, which is what an
    optimizer that only looked at its local tensor would compute.
    """
    results: dict[str, Any] = {}
    runs = (("optimlib", Muon), ("torch", torch.optim.Muon), ("torch_float64", torch.optim.Muon))
    for name, cls in runs:
        model = shard_model(muon_model())
        optimizer = cls(model.parameters(), lr=0.02)
        precision = (
            torch_muon_without_bfloat16 if name == "torch_float64" else contextlib.nullcontext
        )
        with precision():
            train_muon(model, optimizer, steps, results if name == "optimlib" else None)
        results[name] = weights(model)
    return results


def train_muon(
    model: nn.Module, optimizer: Any, steps: int, first_direction: dict[str, Any] | None
) -> None:
    """Muon's steps on the whole batches; optionally record the first step's direction."""
    for step, (inputs, targets) in enumerate(muon_data(steps)):
        optimizer.zero_grad()
        loss_fn(model, inputs, targets).backward()
        optimizer.step()
        if step == 0 and first_direction is not None:
            # The direction Muon orthogonalized at this step (Nesterov's).
            weight = model[0].weight
            buffer = optimizer.state[weight]["momentum_buffer"]
            direction = weight.grad.lerp(buffer, 0.95)
            first_direction["direction"] = whole(direction)
            first_direction["shard_alone"] = orthogonalize(
                direction.to_local(), DEFAULT_NS_COEFFICIENTS, DEFAULT_NS_STEPS, DEFAULT_EPS
            )


def single_process_muon(cls: type, steps: int) -> list[Tensor]:
    model = muon_model()
    train(model, cls(model.parameters(), lr=0.02), muon_data(steps))
    return weights(model)


# ---------------------------------------------------------------------------
# Checkpoints across world sizes
# ---------------------------------------------------------------------------


def checkpointed_model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = mlp(seed=4)
    return model, optimlib.Adam(model.parameters(), lr=0.01)


def checkpoint_data() -> list[tuple[Tensor, Tensor]]:
    return batches(10, seed=5)


def save_midway(rank: int, world_size: int, checkpoint_dir: str) -> list[Tensor]:
    """FSDP2 and Adam on the ranks' shares of 10 batches; a checkpoint after 5.

    Returns the weights after all 10 steps: the uninterrupted run.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, _ = checkpointed_model_and_optimizer()
    model = shard_model(model)
    optimizer = optimlib.Adam(model.parameters(), lr=0.01)
    for step, (inputs, targets) in enumerate(checkpoint_data()):
        if step == 5:
            model_state, optimizer_state = get_state_dict(model, optimizer)
            checkpoint = {"model": model_state, "optim": optimizer_state}
            dcp.save(checkpoint, checkpoint_id=checkpoint_dir)
        optimizer.zero_grad()
        mine = my_part(inputs, rank, world_size), my_part(targets, rank, world_size)
        loss_fn(model, *mine).backward()
        optimizer.step()
    return weights(model)


def resume_in_one_process(
    checkpoint_dir: str,
) -> tuple[list[Tensor], dict[str, Any]]:
    """Load the 2-rank checkpoint into a plain model, here; take steps 6 to 10.

    Returns the weights at the end and the loaded optimizer's state of the
    first weight matrix (whole tensors again).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_state_dict,
        set_state_dict,
    )

    model, optimizer = checkpointed_model_and_optimizer()
    # get_state_dict creates Adam's state (one step at lr 0), for load to fill.
    model_state, optimizer_state = get_state_dict(model, optimizer)
    checkpoint = {"model": model_state, "optim": optimizer_state}
    with warnings.catch_warnings():
        # Loading without a process group is the point here: no need to warn.
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(checkpoint, checkpoint_id=checkpoint_dir)  # fills them in place
    set_state_dict(
        model,
        optimizer,
        model_state_dict=checkpoint["model"],
        optim_state_dict=checkpoint["optim"],
    )
    loaded = {k: whole(v) for k, v in optimizer.state[model[0].weight].items()}
    train(model, optimizer, checkpoint_data()[5:])
    return weights(model), loaded


# ---------------------------------------------------------------------------
# Everything the chapter runs on two ranks, in one start of the processes
# ---------------------------------------------------------------------------


def distributed_runs(rank: int, world_size: int, checkpoint_dir: str) -> dict[str, Any]:
    """All of the chapter's multi-rank runs; one process start is costly, so one for all."""
    return {
        "by_hand": data_parallel_run(rank, world_size, steps=20, by_hand=True),
        "ddp": data_parallel_run(rank, world_size, steps=20, by_hand=False),
        "memory": measure_memory(rank, world_size),
        "dtensor": dtensor_facts(rank, world_size),
        "muon": sharded_muon_run(rank, world_size, steps=10),
        "checkpoint": save_midway(rank, world_size, os.fspath(checkpoint_dir)),
    }
