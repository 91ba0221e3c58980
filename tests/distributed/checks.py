"""What the distributed test modules share in the pytest process: skips, tolerances, checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist

from optimlib.adafactor import Adafactor
from optimlib.lbfgs import LBFGS
from tests.distributed.workers import Case


def require_gloo() -> None:
    """Skip the calling module where torch.distributed or its gloo backend is missing."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip(
            "torch.distributed with the gloo backend is not available", allow_module_level=True
        )


def tolerance(case: Case) -> dict[str, float]:
    """How far a two-process float64 run may be from the single-process one.

    The only difference is the gradient's rounding: the average of the two
    halves' mean gradients, ``(g1 + g2) / 2``, against the whole batch's mean;
    measured gaps after 6 steps are at most 4e-15, hence atol 1e-12 and rtol
    1e-10. L-BFGS's strong-Wolfe line search interpolates between trial steps,
    which magnifies those gaps (2.3e-12 measured): atol 1e-10, rtol 1e-8.
    """
    if case.closure:
        return {"rtol": 1e-8, "atol": 1e-10}
    return {"rtol": 1e-10, "atol": 1e-12}


EXACT = {"rtol": 0.0, "atol": 0.0}


class KnownFailure(Exception):
    """A worker's run failed as a known bug or limitation does (tests mark it xfail)."""


def known_failure(reason: str) -> pytest.MarkDecorator:
    """xfail, strict: the test fails if the run works, or if it fails in another way."""
    return pytest.mark.xfail(strict=True, raises=KnownFailure, reason=reason)


def outcome(
    results: list[dict[str, Any]], name: str, known: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both ranks' results of one run.

    If the run raised in a worker: :class:`KnownFailure` where the traceback
    contains ``known``, else a failure that shows the traceback.
    """
    if name not in results[0]:
        pytest.fail(f"the workers did not run {name}")
    for rank_results in results:
        error = rank_results[name].get("error")
        if error is not None:
            if known is not None and known in error:
                raise KnownFailure(error.strip().splitlines()[-1])
            pytest.fail(f"{name} raised in a worker:\n{error}")
    return results[0][name], results[1][name]


def assert_params_close(got: list, expected: list, what: str, **tol: float) -> None:
    assert len(got) == len(expected), what
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(
            a, b, **tol, msg=lambda m, i=index: f"{what}, parameter {i}: {m}"
        )


def assert_run_close(got: dict[str, Any], expected: dict[str, Any], **tol: float) -> None:
    """Parameters, and every tensor of the optimizer state, within ``tol``."""
    assert_params_close(got["params"], expected["params"], "parameters", **tol)
    if "state" in expected:
        assert sorted(got["state"]) == sorted(expected["state"])
        for key, want in expected["state"].items():
            torch.testing.assert_close(
                got["state"][key], want, **tol, msg=lambda m, k=key: f"state {k}: {m}"
            )


def moved(before: list, after: list) -> bool:
    """Whether training changed any parameter (so that a comparison is not vacuous)."""
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


#: Updates that fail on DTensors, as torch.optim's own do: what the worker's
#: traceback shows, and why.
DTENSOR_FAILURES: dict[type, tuple[str, str]] = {
    Adafactor: (
        "_NormPartial",
        "Adafactor squares in place (square_, or _foreach_mul_) the column norms of a "
        "row-sharded matrix, a _NormPartial DTensor that DTensor refuses to change in "
        "place (squaring out of place runs, but its step size reads the norm with "
        ".item(), which gives the shard's norm, so the update is wrong); torch.optim.Adafactor "
        "fails too",
    ),
    LBFGS: (
        "aten.view.default",
        "L-BFGS flattens each parameter with view(-1), which DTensor refuses for an "
        "unevenly sharded matrix (5 rows over 2 processes); torch.optim.LBFGS fails too",
    ),
}


def dtensor_failure(case: Case) -> tuple[str, str] | None:
    """The case's entry of :data:`DTENSOR_FAILURES`: L-BFGS's only where shards are uneven."""
    if case.cls is LBFGS and case.model == "even":
        return None
    return DTENSOR_FAILURES.get(case.cls)
