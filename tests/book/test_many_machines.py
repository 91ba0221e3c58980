"""optimlib.book.many_machines: Chapter 12's runs on two gloo processes, and their launcher.

The two-process runs start once for the module (starting processes that
import torch is what costs time); each test then checks one of the relations
the chapter prints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from optimlib.book import many_machines
from optimlib.muon import Muon

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")


def _sleep(rank: int, world_size: int) -> None:
    time.sleep(600)


def _rank_and_world(rank: int, world_size: int, offset: int = 0) -> tuple[int, int, bool]:
    return rank + offset, world_size, dist.is_initialized()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    checkpoint_dir = tmp_path_factory.mktemp("many_machines") / "checkpoint"
    results = many_machines.launch(
        many_machines.distributed_runs, world_size=2, checkpoint_dir=str(checkpoint_dir)
    )
    return results, checkpoint_dir


def test_launch_with_one_rank_runs_here_in_a_group_it_then_destroys():
    assert many_machines.launch(_rank_and_world, world_size=1, offset=5) == [(5, 1, True)]
    assert not dist.is_initialized()
    with pytest.raises(ZeroDivisionError):
        many_machines.launch(lambda rank, world_size: 1 / 0, world_size=1)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="at least 1"):
        many_machines.launch(_rank_and_world, world_size=0)


def test_launch_raises_instead_of_waiting_for_ever():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish"):
        many_machines.launch(_sleep, world_size=2, timeout_s=1.0)
    assert time.monotonic() - start < 60  # the processes were killed, not joined


def test_data_parallel_ranks_agree_with_one_process_and_with_each_other(ranks):
    results, _ = ranks
    reference = many_machines.single_process_adamw(steps=20)
    for name in ("by_hand", "ddp"):
        assert many_machines.max_difference(results[0][name], results[1][name]) == 0.0
        assert many_machines.max_difference(results[0][name], reference) < 1e-13
    # The comparison can fail: a run of fewer steps is far from it.
    assert many_machines.max_difference(many_machines.single_process_adamw(19), reference) > 1e-4


def test_state_bytes_per_rank_are_zeros_formulas(ranks):
    results, _ = ranks
    one = many_machines.launch(many_machines.measure_memory, world_size=1)[0]
    psi, counters = 4096, 4 * 4  # four 32 x 32 float32 matrices, a 4-byte step each
    for setup in ("replicated", "zero1", "fsdp2"):
        assert one[setup] == {
            "params": 4 * psi,
            "grads": 4 * psi,
            "state": 8 * psi + counters,
            "state_tensors": 12,
        }
    for memory in (result["memory"] for result in results):
        assert memory["replicated"] == one["replicated"]
        assert memory["zero1"] == {
            "params": 4 * psi,
            "grads": 4 * psi,
            "state": 8 * psi // 2 + counters // 2,
            "state_tensors": 6,
        }
        assert memory["fsdp2"] == {
            "params": 4 * psi // 2,
            "grads": 4 * psi // 2,
            "state": 8 * psi // 2 + counters,
            "state_tensors": 12,
        }


def test_dtensor_facts(ranks):
    results, _ = ranks
    facts = [result["dtensor"] for result in results]
    full = facts[0]["full_grad"]
    assert facts[0]["shape"] == (16, 8) and facts[1]["local_shape"] == (8, 8)
    assert facts[0]["placements"] == "(Shard(dim=0),)"
    assert facts[0]["zeros_like"] == "DTensor (8, 8)"
    assert facts[0]["zeros_of_shape"] == "RuntimeError"
    for rank, fact in enumerate(facts):
        assert fact["local_norm"] == pytest.approx(full.chunk(2)[rank].norm().item(), rel=1e-12)
        assert fact["global_norm"] == pytest.approx(full.norm().item(), rel=1e-12)
        # The norm is a pending reduction: .item() silently gives the shard's.
        assert fact["norm_placements"] == "(_NormPartial(2),)"
        assert fact["norm_item"] == fact["local_norm"]
    assert facts[0]["norm_item"] != facts[1]["norm_item"]
    combined = torch.stack([fact["local_column_norms"] for fact in facts]).norm(dim=0)
    torch.testing.assert_close(combined, full.norm(dim=0), rtol=1e-12, atol=0)


def test_sharded_muon_equals_one_process_and_a_shard_alone_does_not(ranks):
    results, _ = ranks
    muon = results[0]["muon"]
    single = many_machines.single_process_muon(Muon, steps=10)
    assert all(torch.equal(a, b) for a, b in zip(muon["optimlib"], single, strict=True))
    torch_single = many_machines.single_process_muon(torch.optim.Muon, steps=10)
    assert many_machines.max_difference(muon["torch"], torch_single) > 1e-4
    # Without the bfloat16 cast torch's sharded run is its single-process run, to rounding.
    original = torch.optim._muon._zeropower_via_newtonschulz
    with many_machines.torch_muon_without_bfloat16():
        torch_float64 = many_machines.single_process_muon(torch.optim.Muon, steps=10)
    assert torch.optim._muon._zeropower_via_newtonschulz is original
    assert many_machines.max_difference(muon["torch_float64"], torch_float64) < 1e-13
    assert many_machines.max_difference(torch_float64, torch_single) > 1e-4
    whole = many_machines.orthogonalize(
        muon["direction"],
        many_machines.DEFAULT_NS_COEFFICIENTS,
        many_machines.DEFAULT_NS_STEPS,
        many_machines.DEFAULT_EPS,
    )
    alone = torch.cat([result["muon"]["shard_alone"] for result in results])
    assert (whole - alone).abs().max().item() > 0.1
    # Each rank's shard_alone really is its own block: the first rows of each differ.
    assert not torch.equal(results[0]["muon"]["shard_alone"], results[1]["muon"]["shard_alone"])


def test_a_two_rank_checkpoint_resumes_in_one_process(ranks):
    results, checkpoint_dir = ranks
    assert sorted(os.listdir(checkpoint_dir)) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    resumed, loaded = many_machines.resume_in_one_process(str(checkpoint_dir))
    assert loaded["step"].item() == 5 and loaded["exp_avg"].shape == (16, 8)
    assert many_machines.max_difference(resumed, results[0]["checkpoint"]) < 1e-13
    # FSDP2 with Adam is itself the single-process run, to rounding.
    model, optimizer = many_machines.checkpointed_model_and_optimizer()
    many_machines.train(model, optimizer, many_machines.checkpoint_data())
    weights = many_machines.weights(model)
    assert many_machines.max_difference(results[0]["checkpoint"], weights) < 1e-13
    # Without the checkpoint, five steps from the start are far from it.
    model, optimizer = many_machines.checkpointed_model_and_optimizer()
    many_machines.train(model, optimizer, many_machines.checkpoint_data()[5:])
    assert many_machines.max_difference(many_machines.weights(model), weights) > 1e-3


def test_helpers():
    batch = torch.arange(10.0)
    assert torch.equal(many_machines.my_part(batch, 1, 2), torch.arange(5.0, 10.0))
    assert many_machines.local_bytes([torch.zeros(3, dtype=torch.float64), None, 1.0]) == 24
    assert many_machines.max_difference([torch.zeros(2)], [torch.tensor([0.0, -0.5])]) == 0.5
    port = many_machines.free_port()
    assert 0 < port < 65536


def test_newton_schulz_without_cast_is_torchs_iteration_in_float64():
    matrix = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    args = (
        many_machines.DEFAULT_NS_COEFFICIENTS,
        many_machines.DEFAULT_NS_STEPS,
        many_machines.DEFAULT_EPS,
    )
    exact = many_machines.newton_schulz_without_cast(matrix, *args)
    assert exact.dtype == torch.float64 and exact.shape == (12, 5)
    in_bfloat16 = many_machines.orthogonalize(matrix, *args).double()
    gap = (exact - in_bfloat16).abs().max().item()
    assert 0 < gap < 0.05  # the same iteration, rounded to bfloat16 or not
    # Its singular values lie in Muon's band around 1, for a wide matrix too.
    for case in (exact, many_machines.newton_schulz_without_cast(matrix.T, *args)):
        singular = torch.linalg.svdvals(case)
        assert singular.min() > 0.5 and singular.max() < 1.5
