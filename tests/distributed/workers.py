"""What the distributed tests share: the runs, the models, and the two processes.

Every optimlib optimizer trains a tiny float64 model under one form of data
parallelism (DDP, ZeRO, FSDP2, a distributed checkpoint) in two CPU processes
that talk through gloo, and the same model trains in the pytest process on the
whole batch. Starting two processes that import torch costs seconds, so each
test module starts one pair (:func:`launch`), which runs every case of its mode
and writes what it found to a file per rank; one test per case then compares.

This module is imported by the spawned processes, so everything a worker needs
lives here, at module level.
"""

from __future__ import annotations

import datetime
import inspect
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from optimlib.lbfgs import LBFGS
from optimlib.lion import Lion
from optimlib.lr_scheduler import StepLR
from optimlib.muon import Muon, muon_and_adamw
from optimlib.random_scale_sgd import RandomScaleSGD
from optimlib.schedule_free import ScheduleFreeAdamW
from optimlib.sparse_adam import SparseAdam
from tests.library.optimizer_cases import OPTIMIZERS

WORLD_SIZE = 2
STEPS = 6
BATCH = 8
#: A collective that waits longer than this raises in the worker instead of hanging.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)
#: The whole pair of processes; spawning them and importing torch takes seconds on 2 cores.
JOIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Case:
    """One optimizer configuration, trained the same way in every mode that takes it."""

    name: str
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    #: The second parameter group's own options (biases, or the second table).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: "mlp" (dense), "even" (dense, every FSDP2 shard the same size) or "tables"
    #: (embeddings with sparse gradients).
    model: str = "mlp"
    #: step(closure) rather than backward-then-step (L-BFGS).
    closure: bool = False
    #: optimlib.muon.muon_and_adamw: Muon for the hidden matrices, AdamW for the rest.
    muon_and_adamw: bool = False
    #: Muon alone, on the hidden matrices (the other parameters are not trained).
    muon_only: bool = False

    @property
    def one_group(self) -> bool:
        return self.closure  # L-BFGS takes one parameter group

    @property
    def has_foreach(self) -> bool:
        return "foreach" in inspect.signature(self.cls).parameters

    @property
    def has_fused(self) -> bool:
        return "fused" in inspect.signature(self.cls).parameters


def _table_cases() -> Iterator[Case]:
    for info in OPTIMIZERS:
        yield Case(info.name, info.ours, max(info.configs, key=len), info.group_overrides)


MUON_KWARGS = {"lr": 0.02, "weight_decay": 0.05}
ADAMW_KWARGS = {"lr": 0.01, "weight_decay": 0.01}

CASES: tuple[Case, ...] = (
    *_table_cases(),
    Case("Lion", Lion, {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}, {"lr": 5e-4}),
    Case("RandomScaleSGD", RandomScaleSGD, {"lr": 0.05, "seed": 3}, {"lr": 0.02}),
    Case(
        "ScheduleFreeAdamW",
        ScheduleFreeAdamW,
        {"lr": 0.01, "warmup_steps": 2, "weight_decay": 0.05},
        {"lr": 0.005},
    ),
    Case("Muon", Muon, MUON_KWARGS, muon_only=True),
    Case("MuonAndAdamW", Muon, MUON_KWARGS, muon_and_adamw=True),
    Case("SparseAdam", SparseAdam, {"lr": 0.01, "betas": (0.8, 0.99)}, {"lr": 0.005}, "tables"),
    Case(
        "LBFGS-strong_wolfe",
        LBFGS,
        {"lr": 0.5, "max_iter": 4, "history_size": 5, "line_search_fn": "strong_wolfe"},
        closure=True,
    ),
    Case("LBFGS", LBFGS, {"lr": 0.1, "max_iter": 3, "history_size": 4}, closure=True),
    # On FSDP2 L-BFGS needs every matrix sharded evenly (see checks.DTENSOR_FAILURES).
    Case(
        "LBFGS-even-shards",
        LBFGS,
        {"lr": 0.5, "max_iter": 4, "history_size": 5, "line_search_fn": "strong_wolfe"},
        model="even",
        closure=True,
    ),
)
CASES_BY_NAME = {case.name: case for case in CASES}


# ------------------------------------------------------------------ models and data


def mlp() -> nn.Module:
    """Rows 6, 5 and 3: even and uneven FSDP shards, tall and wide matrices, biases."""
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)
    ).double()


class Tables(nn.Module):
    """Two embedding tables with sparse gradients; some rows looked up twice, some never."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Embedding(12, 3, sparse=True, dtype=torch.float64)
        self.second = nn.Embedding(7, 3, sparse=True, dtype=torch.float64)

    def forward(self, rows: Tensor) -> Tensor:
        return self.first(rows[:, :2]).sum(1) * self.second(rows[:, 2] % 7)


def even_mlp() -> nn.Module:
    """Rows 6, 4 and 2: two processes hold equal shards of every parameter."""
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)
    ).double()


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "even": even_mlp, "tables": Tables}
OUTPUTS = {"mlp": 3, "even": 2, "tables": 3}


def build_model(case: Case) -> nn.Module:
    model = MODELS[case.model]()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.5)
    return model


def batch(case: Case, step: int) -> tuple[Tensor, Tensor]:
    """The whole batch of one step (a different one each step)."""
    generator = torch.Generator().manual_seed(100 + step)
    if case.model != "tables":
        inputs = torch.randn(BATCH, 4, generator=generator, dtype=torch.float64)
    else:
        inputs = torch.randint(0, 10, (BATCH, 3), generator=generator)  # rows 10, 11 never
        inputs[1] = inputs[0]  # a row looked up twice in the batch
    targets = torch.randn(BATCH, OUTPUTS[case.model], generator=generator, dtype=torch.float64)
    return inputs, targets


def local_batch(case: Case, step: int, rank: int | None) -> tuple[Tensor, Tensor]:
    """This rank's half of the batch, or all of it (``rank=None``)."""
    inputs, targets = batch(case, step)
    if rank is None:
        return inputs, targets
    half = BATCH // WORLD_SIZE
    return inputs[rank * half : (rank + 1) * half], targets[rank * half : (rank + 1) * half]


def loss_of(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.mse_loss(model(inputs), targets)


# ------------------------------------------------------------------ optimizers


class Optimizers:
    """The optimizers of one run (two for MuonAndAdamW), stepped and cleared together."""

    def __init__(self, optimizers: list[Any]) -> None:
        self.all = optimizers

    def zero_grad(self) -> None:
        for optimizer in self.all:
            optimizer.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> None:
        for optimizer in self.all:
            optimizer.step() if closure is None else optimizer.step(closure)


def param_groups(case: Case, module: nn.Module) -> list[dict[str, Any]]:
    """Weights, then biases with the case's overrides (the two tables for SparseAdam)."""
    params = list(module.parameters())
    if case.one_group:
        return [{"params": params}]
    if case.muon_only:  # the two hidden matrices
        return [{"params": [module[0].weight, module[2].weight]}]
    first, second = (
        (params[:1], params[1:]) if case.model == "tables" else (params[::2], params[1::2])
    )
    return [{"params": first}, {"params": second, **case.overrides}]


def build_optimizers(
    case: Case, module: nn.Module, extra: dict[str, Any] | None = None, zero: bool = False
) -> Optimizers:
    """The case's optimizer(s) over ``module``'s parameters; ``extra``: foreach, fused..."""
    extra = extra or {}
    if case.muon_and_adamw:
        pair = muon_and_adamw(module, muon_kwargs=MUON_KWARGS, adamw_kwargs=ADAMW_KWARGS)
        return Optimizers([pair.muon, pair.adamw])
    groups = param_groups(case, module)
    if zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return Optimizers(
            [ZeroRedundancyOptimizer(groups, optimizer_class=case.cls, **case.kwargs, **extra)]
        )
    return Optimizers([case.cls(groups, **case.kwargs, **extra)])


def fused_status(cls: type[torch.optim.Optimizer]) -> str | None:
    """``None`` if ``cls(..., fused=True)`` can be built, else why not."""
    try:
        cls([nn.Parameter(torch.zeros(2, dtype=torch.float64))], fused=True)
    except NotImplementedError as error:
        return f"fused=True is not implemented yet: {error}"
    return None


# ------------------------------------------------------------------ training


def train(
    case: Case,
    model: nn.Module,
    optimizers: Optimizers,
    rank: int | None,
    steps: range,
    scheduler: Any = None,
) -> None:
    """Steps ``steps`` of the run; ``rank=None``: the whole batch, in one process."""
    for step in steps:
        inputs, targets = local_batch(case, step, rank)

        def closure(inputs: Tensor = inputs, targets: Tensor = targets) -> Tensor:
            optimizers.zero_grad()
            loss = loss_of(model, inputs, targets)
            loss.backward()
            if rank is not None and case.closure:
                # L-BFGS's line search and stopping tests read the loss: every
                # rank must see the whole batch's, or they take different steps.
                loss = loss.detach().clone()
                dist.all_reduce(loss)
                loss /= WORLD_SIZE
            return loss

        if case.closure:
            optimizers.step(closure)
        else:
            closure()
            optimizers.step()
        if scheduler is not None:
            scheduler.step()


def whole(tensor: Tensor) -> Tensor:
    """A full copy of a tensor, gathering a DTensor's shards."""
    full = getattr(tensor, "full_tensor", None)
    return (full() if full is not None else tensor).detach().clone()


def snapshot(module: nn.Module, optimizers: Optimizers | None = None) -> dict[str, Any]:
    """The parameters and every tensor of the optimizers' state, by parameter position."""
    params = list(module.parameters())
    result: dict[str, Any] = {"params": [whole(p) for p in params]}
    if optimizers is not None:
        state: dict[str, Tensor] = {}
        for optimizer in optimizers.all:
            for index, param in enumerate(params):
                for key, value in optimizer.state.get(param, {}).items():
                    if isinstance(value, Tensor):
                        state[f"{index}.{key}"] = whole(value)
        result["state"] = state
    return result


def single_process(
    case: Case, steps: int = STEPS, extra: dict[str, Any] | None = None, scheduled: bool = False
) -> dict[str, Any]:
    """The reference: the case trained on the whole batch in this process."""
    model = build_model(case)
    optimizers = build_optimizers(case, model, extra)
    scheduler = make_scheduler(optimizers) if scheduled else None
    train(case, model, optimizers, None, range(steps), scheduler)
    result = snapshot(model, optimizers)
    if scheduler is not None:
        result["last_lr"] = [float(lr) for lr in scheduler.get_last_lr()]
    return result


def make_scheduler(optimizers: Optimizers) -> Any:
    """An optimlib scheduler that halves the learning rate every second step.

    On the first optimizer of the run: Muon's, for the Muon-and-AdamW pair.
    """
    return StepLR(optimizers.all[0], step_size=2, gamma=0.5)


#: The step at which one input of the batch is infinite, and the row it is in
#: (in the second rank's half), so that GradScaler must skip that step.
INF_STEP, INF_ROW = 3, 5


def train_scaled(case: Case, model: nn.Module, optimizers: Optimizers, rank: int | None) -> list:
    """Steps with a GradScaler (CPU): scaled backward, unscale, a skipped step, a growth."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
    scales = []
    for step in range(STEPS):
        inputs, targets = batch(case, step)
        if step == INF_STEP:
            inputs[INF_ROW, 0] = float("inf")
        if rank is not None:
            half = BATCH // WORLD_SIZE
            inputs = inputs[rank * half : (rank + 1) * half]
            targets = targets[rank * half : (rank + 1) * half]
        optimizers.zero_grad()
        scaler.scale(loss_of(model, inputs, targets)).backward()
        for optimizer in optimizers.all:
            scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales


# ------------------------------------------------------------------ the two processes


def _entry(rank: int, mode: str, out_dir: str, tmp_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores: more threads only contend
    dist.init_process_group(
        "gloo",
        # A file, not a TCP port: no free port to find, and none another process can take.
        init_method=(Path(out_dir) / "rendezvous").as_uri(),
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=COLLECTIVE_TIMEOUT,
    )
    results: dict[str, Any] = {}
    try:
        from tests.distributed import modes

        for name, run in getattr(modes, mode)(rank, Path(tmp_dir)):
            try:
                results[name] = run()
            except Exception:  # recorded, and reported by the test of that run
                results[name] = {"error": traceback.format_exc()}
            dist.barrier()
    finally:
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        dist.destroy_process_group()


def launch(mode: str, out_dir: Path, timeout_s: float = JOIN_TIMEOUT_S) -> list[dict[str, Any]]:
    """Run every run of ``modes.<mode>`` in two processes; each rank's results, by run name.

    A pair that does not finish within ``timeout_s`` is killed and the caller
    gets a ``TimeoutError``; a worker that dies raises with its traceback.
    """
    tmp_dir = out_dir / "scratch"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    context = torch.multiprocessing.start_processes(
        _entry,
        args=(mode, str(out_dir), str(tmp_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {mode} processes did not finish within {timeout_s:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
