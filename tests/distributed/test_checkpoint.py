"""A distributed checkpoint mid-run, for every optimlib optimizer on FSDP2, two processes.

After three of six steps each run saves its model, optimizer and scheduler
(an optimlib ``StepLR``) with ``torch.distributed.checkpoint``: the sharded
state dicts of ``get_state_dict``, written by ``dcp.save`` to a directory.
A fresh model and optimizer then ``dcp.load`` it, take it with
``set_state_dict``, and train the three remaining steps. The resumed run must
equal the uninterrupted one bit for bit, and both the single-process run.

``get_state_dict`` on a fresh optimizer first creates its state with a step
of learning rate 0 on zero gradients; ``set_state_dict`` overwrites it. That
is why L-BFGS, whose step needs a closure, is not here.
"""

from __future__ import annotations

from typing import Any

import pytest

from optimlib.random_scale_sgd import RandomScaleSGD
from tests.distributed.checks import (
    DTENSOR_FAILURES,
    EXACT,
    assert_run_close,
    known_failure,
    moved,
    outcome,
    require_gloo,
    tolerance,
)
from tests.distributed.modes import SAVE_AFTER, checkpoint_cases
from tests.distributed.workers import launch, single_process

require_gloo()

pytestmark = pytest.mark.usefixtures("one_thread")

#: What each known failure's traceback shows, and why, by optimizer class.
KNOWN: dict[type, tuple[str, str]] = {
    **{
        cls: (signature, f"on FSDP2: {reason}")
        for cls, (signature, reason) in DTENSOR_FAILURES.items()
    },
    RandomScaleSGD: (
        "generator_state",
        "get_state_dict keeps an optimizer's 'state' and 'param_groups' only, so "
        "RandomScaleSGD's generator_state is not saved, and its load refuses the "
        "checkpoint rather than resume with other random factors",
    ),
}


def runs() -> list:
    return [
        pytest.param(
            case,
            id=case.name,
            marks=known_failure(KNOWN[case.cls][1]) if case.cls in KNOWN else (),
        )
        for case in checkpoint_cases()
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every checkpointed run, in one pair of processes for the module."""
    return launch("checkpoint", tmp_path_factory.mktemp("checkpoint"))


@pytest.mark.parametrize("case", runs())
def test_resumed_run_equals_uninterrupted_run(results, case):
    known = KNOWN.get(case.cls, (None,))[0]
    got, other_rank = outcome(results, f"checkpoint/{case.name}", known)
    assert_run_close(got["resumed"], got["uninterrupted"], **EXACT)
    assert_run_close(other_rank["resumed"], got["resumed"], **EXACT)
    expected = single_process(case, scheduled=True)
    assert moved(single_process(case, SAVE_AFTER)["params"], expected["params"])
    assert_run_close(got["uninterrupted"], expected, **tolerance(case))
