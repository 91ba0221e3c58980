"""Muon under FSDP2: two CPU processes (gloo) train a tiny model as one process does.

FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps each weight matrix as a
DTensor sharded along its rows, one block of rows per process. optimlib's Muon
gathers each matrix's update direction, orthogonalizes the whole matrix and
applies its own rows of the result, so the sharded run must take the steps of
an unsharded one. torch.optim.Muon runs its Newton-Schulz iteration on the
DTensors: for a tall matrix, whose transpose is sharded along the dimension
the Gram matrix sums over, each process's partial product is rounded to
bfloat16 before the sum, and its sharded run drifts from its own
single-process run.

Both processes see the same batch, so that FSDP's averaged gradients, (g + g)/2,
equal the single-process gradients bit for bit and the comparison isolates
the optimizer.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from optimlib.muon import Muon

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)
try:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.debug import CommDebugMode
except ImportError as missing:  # pragma: no cover - depends on the torch build
    pytest.skip(f"FSDP2 is not available: {missing}", allow_module_level=True)

WORLD_SIZE = 2
STEPS = 6
#: Generous: spawning two processes that import torch takes a few seconds on two cores.
TIMEOUT_S = 300.0

#: optimlib's Muon runs each of these; torch's runs the first.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults-lr0.02": {"lr": 0.02},
    "no-nesterov-match-rms": {
        "lr": 0.01,
        "nesterov": False,
        "weight_decay": 0.05,
        "adjust_lr_fn": "match_rms_adamw",
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp() -> nn.Module:
    """Rows 6, 5 and 3 over two processes: even and uneven shards, tall and wide matrices."""
    model = nn.Sequential(
        nn.Linear(4, 6, bias=False),
        nn.Tanh(),
        nn.Linear(6, 5, bias=False),
        nn.Tanh(),
        nn.Linear(5, 3, bias=False),
    ).double()
    _initialise(model, seed=0)
    return model


def convnet() -> nn.Module:
    """A 4-D kernel (5, 2, 3, 3), for Muon's flatten=True groups, and a wide head."""
    model = nn.Sequential(
        nn.Conv2d(2, 5, 3, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(20, 3, bias=False)
    ).double()
    _initialise(model, seed=1)
    return model


def _initialise(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.5)


def batch(model_name: str) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(2)
    shape = (8, 4) if model_name == "mlp" else (8, 2, 4, 4)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    return inputs, torch.randn(8, 3, generator=generator, dtype=torch.float64)


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "convnet": convnet}

#: (name, optimizer class, model, options, flatten): every run, sharded and not.
RUNS: list[tuple[str, type[torch.optim.Optimizer], str, dict[str, Any], bool]] = [
    *((f"optimlib-{name}", Muon, "mlp", config, False) for name, config in CONFIGS.items()),
    ("optimlib-convnet-flatten", Muon, "convnet", CONFIGS["defaults-lr0.02"], True),
    ("torch-defaults-lr0.02", torch.optim.Muon, "mlp", CONFIGS["defaults-lr0.02"], False),
]


def build_optimizer(cls: type, model: nn.Module, options: dict[str, Any], flatten: bool) -> Any:
    if not flatten:
        return cls(model.parameters(), **options)
    kernels = [p for p in model.parameters() if p.ndim > 2]
    matrices = [p for p in model.parameters() if p.ndim == 2]
    return cls([{"params": matrices}, {"params": kernels, "flatten": True}], **options)


def train(model: nn.Module, optimizer: Any, model_name: str, on_step=None) -> None:
    inputs, targets = batch(model_name)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs), targets).backward()
        if on_step is None:
            optimizer.step()
        else:
            on_step(optimizer)


def _whole(tensor: Tensor) -> Tensor:
    full = getattr(tensor, "full_tensor", None)
    return (full() if full is not None else tensor).detach().clone()


def _snapshot(model: nn.Module, optimizer: Any) -> dict[str, list[Tensor]]:
    params = list(model.parameters())
    return {
        "params": [_whole(p) for p in params],
        "buffers": [_whole(optimizer.state[p]["momentum_buffer"]) for p in params],
    }


def _worker(rank: int, port: int, result_path: str) -> None:
    torch.set_num_threads(1)  # two processes on CI's two cores: more threads only contend
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        mesh = init_device_mesh("cpu", (WORLD_SIZE,))
        results: dict[str, Any] = {}
        for name, cls, model_name, options, flatten in RUNS:
            model = MODELS[model_name]()
            for module in model:
                if any(True for _ in module.parameters()):
                    fully_shard(module, mesh=mesh)
            fully_shard(model, mesh=mesh)
            placements = {tuple(p.placements) for p in model.parameters()}
            assert placements == {(Shard(0),)}, placements
            optimizer = build_optimizer(cls, model, options, flatten)
            counts: list[dict[str, int]] = []

            def counted_step(optimizer: Any, counts: list[dict[str, int]] = counts) -> None:
                with CommDebugMode() as comms:
                    optimizer.step()
                counts.append({str(op): n for op, n in comms.get_comm_counts().items()})

            train(model, optimizer, model_name, on_step=counted_step)
            results[name] = {**_snapshot(model, optimizer), "comms": counts}
        if rank == 0:
            torch.save(results, result_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every run of RUNS under FSDP2, in two spawned processes, once for the module."""
    result_path = tmp_path_factory.mktemp("muon_fsdp") / "results.pt"
    context = torch.multiprocessing.start_processes(
        _worker,
        args=(_free_port(), str(result_path)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1.0):  # raises, with the worker's traceback, if one failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the FSDP2 processes did not finish within {TIMEOUT_S:.0f} s")
    return torch.load(Path(result_path), weights_only=True)


def single_process(name: str) -> dict[str, list[Tensor]]:
    _, cls, model_name, options, flatten = next(run for run in RUNS if run[0] == name)
    model = MODELS[model_name]()
    optimizer = build_optimizer(cls, model, options, flatten)
    train(model, optimizer, model_name)
    return _snapshot(model, optimizer)


OPTIMLIB_RUNS = [run[0] for run in RUNS if run[1] is Muon]


@pytest.mark.parametrize("name", OPTIMLIB_RUNS)
def test_sharded_muon_takes_the_steps_of_single_process_muon(sharded, name):
    expected = single_process(name)
    for key in ("params", "buffers"):
        for index, (got, want) in enumerate(zip(sharded[name][key], expected[key], strict=True)):
            torch.testing.assert_close(
                got, want, rtol=1e-12, atol=1e-14, msg=lambda m, k=key, i=index: f"{k}[{i}]: {m}"
            )


def test_single_process_optimlib_equals_torch():
    """The reference the sharded runs are held to is torch's own single-process Muon."""
    ours, theirs = (
        single_process("optimlib-defaults-lr0.02"),
        single_process("torch-defaults-lr0.02"),
    )
    for got, want in zip(ours["params"], theirs["params"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_muon_under_fsdp_differs_from_its_single_process_run(sharded):
    expected = single_process("torch-defaults-lr0.02")
    got = sharded["torch-defaults-lr0.02"]["params"]
    # The first matrix, 6 x 4, is tall: its bfloat16 Gram matrix is summed across processes.
    gaps = [(a - b).abs().max().item() for a, b in zip(got, expected["params"], strict=True)]
    assert gaps[0] > 1e-4, gaps
    # ... while optimlib's sharded run of the same configuration has no gap at all.
    ours = sharded["optimlib-defaults-lr0.02"]["params"]
    assert all(torch.equal(a, b) for a, b in zip(ours, expected["params"], strict=True))


def test_sharded_step_communicates_one_all_gather_per_matrix(sharded):
    """The whole matrix costs one all-gather per step; torch's iteration on DTensors, many."""
    for name in OPTIMLIB_RUNS:
        matrices = len(sharded[name]["params"])
        for counts in sharded[name]["comms"]:
            assert counts == {"c10d_functional.all_gather_into_tensor": matrices}, (name, counts)
    torch_counts = sharded["torch-defaults-lr0.02"]["comms"]
    assert all(sum(counts.values()) > 3 * 3 for counts in torch_counts), torch_counts
