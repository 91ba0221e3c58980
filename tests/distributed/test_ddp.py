"""Every optimlib optimizer under DistributedDataParallel, two CPU processes (gloo).

Each process gets half of every batch; DDP averages the two halves'
gradients, so the run must equal single-process training on the whole batch
(see :func:`tests.distributed.checks.tolerance`), and the two replicas must stay
equal bit for bit. Also here: an optimlib scheduler stepping along, and
``torch.amp.GradScaler("cpu")`` scaling the loss, unscaling the gradients
and skipping the step whose gradients are not finite, on every rank alike.
SparseAdam trains embedding tables: DDP all-reduces their sparse gradients.
L-BFGS's closure averages the loss over the processes (see ``workers.train``).
"""

from __future__ import annotations

from typing import Any

import pytest

from optimlib.rprop import Rprop
from tests.distributed.checks import (
    EXACT,
    assert_params_close,
    assert_run_close,
    moved,
    outcome,
    require_gloo,
    tolerance,
)
from tests.distributed.workers import (
    CASES,
    INF_STEP,
    build_model,
    build_optimizers,
    launch,
    single_process,
    snapshot,
    train_scaled,
)

require_gloo()

pytestmark = pytest.mark.usefixtures("one_thread")

SCALED_CASES = [case for case in CASES if case.model != "tables" and not case.closure]


def ids(case: Any) -> str:
    return case.name


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every DDP run, in one pair of processes for the module."""
    return launch("ddp", tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_ddp_equals_single_process_on_the_whole_batch(results, case):
    got, other_rank = outcome(results, f"ddp/{case.name}")
    expected = single_process(case)
    assert moved(snapshot(build_model(case))["params"], expected["params"])
    assert_run_close(got, expected, **tolerance(case))
    assert_run_close(other_rank, got, **EXACT)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_ddp_with_a_scheduler_equals_single_process(results, case):
    got, other_rank = outcome(results, f"ddp-scheduler/{case.name}")
    expected = single_process(case, scheduled=True)
    assert got["last_lr"] == expected["last_lr"]
    # The schedule changes the run (so this test sees whether it was applied),
    # except Rprop's, which reads lr only to set its first step sizes.
    unscheduled = outcome(results, f"ddp/{case.name}")[0]
    assert moved(unscheduled["params"], got["params"]) or case.cls is Rprop
    assert_run_close(got, expected, **tolerance(case))
    assert_run_close(other_rank, got, **EXACT)


@pytest.mark.parametrize("case", SCALED_CASES, ids=ids)
def test_ddp_with_grad_scaler_equals_single_process(results, case):
    got, other_rank = outcome(results, f"ddp-gradscaler/{case.name}")
    model = build_model(case)
    optimizers = build_optimizers(case, model)
    scales = train_scaled(case, model, optimizers, None)
    # Grown after two finite steps, halved at the step with an infinite input.
    assert scales[INF_STEP - 1 : INF_STEP + 1] == [512.0, 256.0], scales
    assert got["scales"] == other_rank["scales"] == scales
    assert_run_close(got, snapshot(model, optimizers), **tolerance(case))
    assert_params_close(other_rank["params"], got["params"], "other rank", **EXACT)
