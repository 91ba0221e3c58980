"""The runs of each mode, as the two worker processes execute them.

Each function takes the rank and a scratch directory shared by the ranks, and
yields ``(run name, run)`` in the same order on both ranks; ``run()`` returns
what the test compares (tensors, numbers, strings) and must make the same
collective calls on both ranks. The pytest process computes the references.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests.distributed.workers import (
    CASES,
    STEPS,
    Case,
    Optimizers,
    build_model,
    build_optimizers,
    fused_status,
    make_scheduler,
    snapshot,
    train,
    train_scaled,
)

Runs = Iterator[tuple[str, Callable[[], dict[str, Any]]]]

#: The step after which the ZeRO and checkpoint runs save their state.
SAVE_AFTER = 3


def implementations(case: Case) -> dict[str, dict[str, Any]]:
    """The update paths a sharded run takes: for-loop, foreach and (where built) fused."""
    if not case.has_foreach:
        return {"default": {}}
    paths: dict[str, dict[str, Any]] = {
        "for-loop": {"foreach": False},
        "foreach": {"foreach": True},
    }
    if case.has_fused and fused_status(case.cls) is None:
        paths["fused"] = {"fused": True}
    return paths


# ------------------------------------------------------------------ DDP


def ddp(rank: int, scratch: Path) -> Runs:
    for case in CASES:

        def run(case: Case = case, scheduled: bool = False) -> dict[str, Any]:
            model = DistributedDataParallel(build_model(case))
            optimizers = build_optimizers(case, model.module)
            scheduler = make_scheduler(optimizers) if scheduled else None
            train(case, model, optimizers, rank, range(STEPS), scheduler)
            result = snapshot(model.module, optimizers)
            if scheduler is not None:
                result["last_lr"] = [float(lr) for lr in scheduler.get_last_lr()]
            return result

        yield f"ddp/{case.name}", run
        yield f"ddp-scheduler/{case.name}", lambda run=run: run(scheduled=True)
        if case.model != "tables" and not case.closure:

            def scaled(case: Case = case) -> dict[str, Any]:
                model = DistributedDataParallel(build_model(case))
                optimizers = build_optimizers(case, model.module)
                scales = train_scaled(case, model, optimizers, rank)
                return {**snapshot(model.module, optimizers), "scales": scales}

            yield f"ddp-gradscaler/{case.name}", scaled


# ------------------------------------------------------------------ ZeRO


def zero_cases() -> list[Case]:
    """ZeroRedundancyOptimizer takes an optimizer class: not the Muon-and-AdamW pair.

    Nor L-BFGS: each rank would run its own L-BFGS on its share of the
    parameters, with dot products and line searches over that share only.
    """
    return [case for case in CASES if not (case.muon_and_adamw or case.closure)]


def zero(rank: int, scratch: Path) -> Runs:
    for case in zero_cases():

        def run(case: Case = case) -> dict[str, Any]:
            model = DistributedDataParallel(build_model(case))
            optimizers = build_optimizers(case, model.module, zero=True)
            train(case, model, optimizers, rank, range(SAVE_AFTER))
            (optimizer,) = optimizers.all
            optimizer.consolidate_state_dict(to=0)
            result = snapshot(model.module)
            if rank == 0:
                # A copy: the state dict holds the state's own tensors, which train on.
                result["state_dict"] = copy.deepcopy(optimizer.state_dict())
            train(case, model, optimizers, rank, range(SAVE_AFTER, STEPS))
            result["final"] = snapshot(model.module)["params"]
            return result

        yield f"zero/{case.name}", run

        def scheduled(case: Case = case) -> dict[str, Any]:
            # The scheduler sets ZeRO's groups' lr; ZeRO passes it on to its optimizer.
            model = DistributedDataParallel(build_model(case))
            optimizers = build_optimizers(case, model.module, zero=True)
            scheduler = make_scheduler(optimizers)
            train(case, model, optimizers, rank, range(STEPS), scheduler)
            return snapshot(model.module)

        yield f"zero-scheduler/{case.name}", scheduled


# ------------------------------------------------------------------ FSDP2


def fsdp_cases() -> list[Case]:
    """FSDP2 shards dense parameters only: SparseAdam's sparse gradients are not for it."""
    return [case for case in CASES if case.model != "tables" and not case.muon_only]


def fully_sharded(case: Case) -> nn.Module:
    """The model with each Linear, and the whole, sharded row-wise over the two processes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = build_model(case)
    for module in model:
        if any(True for _ in module.parameters()):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def fsdp(rank: int, scratch: Path) -> Runs:
    from torch.distributed.tensor import DTensor

    for case in fsdp_cases():
        for path, extra in implementations(case).items():

            def run(case: Case = case, extra: dict[str, Any] = extra) -> dict[str, Any]:
                model = fully_sharded(case)
                assert all(isinstance(p, DTensor) for p in model.parameters())
                optimizers = build_optimizers(case, model, extra)
                train(case, model, optimizers, rank, range(STEPS))
                return snapshot(model, optimizers)

            yield f"fsdp-{path}/{case.name}", run


# ------------------------------------------------------------------ distributed checkpoint


def checkpoint_cases() -> list[Case]:
    """FSDP2's cases, less L-BFGS: ``get_state_dict`` initialises an empty optimizer's
    state by a step without a closure, which L-BFGS cannot take."""
    return [case for case in fsdp_cases() if not case.closure]


def checkpoint(rank: int, scratch: Path) -> Runs:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    def start(case: Case) -> tuple[nn.Module, Optimizers, Any]:
        model = fully_sharded(case)
        optimizers = build_optimizers(case, model)
        return model, optimizers, make_scheduler(optimizers)

    for case in checkpoint_cases():

        def run(case: Case = case) -> dict[str, Any]:
            directory = scratch / case.name
            model, optimizers, scheduler = start(case)
            train(case, model, optimizers, rank, range(SAVE_AFTER), scheduler)
            model_state, optim_state = get_state_dict(model, optimizers.all)
            state = {"model": model_state, "optim": optim_state}
            dcp.save({**state, "scheduler": scheduler.state_dict()}, checkpoint_id=directory)
            train(case, model, optimizers, rank, range(SAVE_AFTER, STEPS), scheduler)
            uninterrupted = snapshot(model, optimizers)

            model, optimizers, scheduler = start(case)
            model_state, optim_state = get_state_dict(model, optimizers.all)
            state = {"model": model_state, "optim": optim_state, "scheduler": {}}
            state["scheduler"] = scheduler.state_dict()
            dcp.load(state, checkpoint_id=directory)
            set_state_dict(
                model,
                optimizers.all,
                model_state_dict=state["model"],
                optim_state_dict=state["optim"],
            )
            scheduler.load_state_dict(state["scheduler"])
            train(case, model, optimizers, rank, range(SAVE_AFTER, STEPS), scheduler)
            return {"uninterrupted": uninterrupted, "resumed": snapshot(model, optimizers)}

        yield f"checkpoint/{case.name}", run


# ------------------------------------------------------------------ a hang


def stall(rank: int, scratch: Path) -> Runs:
    """For the test of :func:`~tests.distributed.workers.launch`'s timeout: a barrier
    that rank 1 enters and rank 0 does not (it sleeps)."""

    def run() -> dict[str, Any]:
        if rank == 0:
            time.sleep(600)
        dist.barrier()
        return {}

    yield "stall", run
