"""Every optimlib optimizer on FSDP2's sharded parameters (DTensors), two CPU processes.

``torch.distributed.fsdp.fully_shard`` keeps each parameter as a DTensor
sharded by rows (6, 5 and 3 rows: even and uneven shards), and each process
updates its own rows. Each process gets half of every batch; FSDP averages
the gradients, so each update path (for-loop, foreach, and fused where the
class builds with ``fused=True``) must equal single-process training on the
whole batch with the same path.

Muon alone is covered by ``tests/library/test_muon_fsdp.py`` (whole matrices
gathered for Newton-Schulz, communication counted); here it runs as the
Muon-and-AdamW pair, with the biases and the head on AdamW. SparseAdam is not
here: FSDP2 shards dense parameters and reduce-scatters dense gradients.
Updates that DTensor refuses (``checks.DTENSOR_FAILURES``, as torch.optim's
twins are refused) are strict xfails; L-BFGS, refused on uneven shards, also
runs on a model whose every shard is the same size, where it works.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.distributed.checks import (
    EXACT,
    assert_run_close,
    dtensor_failure,
    known_failure,
    outcome,
    require_gloo,
    tolerance,
)
from tests.distributed.modes import fsdp_cases
from tests.distributed.workers import Case, fused_status, launch, single_process

require_gloo()

pytestmark = pytest.mark.usefixtures("one_thread")


def paths(case: Case) -> list[str]:
    if not case.has_foreach:
        return ["default"]
    return ["for-loop", "foreach", *(["fused"] if case.has_fused else [])]


EXTRA = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}}


def runs() -> list:
    params = []
    for case in fsdp_cases():
        failure = dtensor_failure(case)
        for path in paths(case):
            marks = () if failure is None else known_failure(failure[1])
            params.append(pytest.param(case, path, id=f"{case.name}-{path}", marks=marks))
    return params


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every FSDP2 run, in one pair of processes for the module."""
    return launch("fsdp", tmp_path_factory.mktemp("fsdp"))


@pytest.mark.parametrize(("case", "path"), runs())
def test_fsdp_equals_single_process(results, case, path):
    name = f"fsdp-{path}/{case.name}"
    extra = EXTRA.get(path, {"fused": True})
    if path == "fused":
        status = fused_status(case.cls)
        if status is not None:
            pytest.skip(status)
        error = results[0].get(name, {}).get("error", "")
        if "_fused_" in error and "does not have a sharding strategy" in error:
            pytest.xfail(
                f"torch's DTensor has no sharding strategy for the fused {case.name} kernel "
                f"(torch.optim.{case.name}(fused=True) fails the same way)"
            )
    known = (dtensor_failure(case) or (None,))[0]
    got, other_rank = outcome(results, name, known)
    close = tolerance(case)
    if path == "fused" and getattr(case.cls.fused_update, "compiles_for_loop", False):
        # DTensors take the for-loop, the single process the compiled one, which
        # can round NAdam's float32 product of momenta one unit differently
        # (1.1e-7 relative measured; see test_compiled_fused).
        close = {"rtol": 1e-6, "atol": 1e-9}
    assert_run_close(got, single_process(case, extra=extra), **close)
    assert_run_close(other_rank, got, **EXACT)
