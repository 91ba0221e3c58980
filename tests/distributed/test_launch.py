"""The two-process harness itself: a pair that hangs is killed, and the test fails."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.checks import require_gloo
from tests.distributed.workers import launch

require_gloo()


def test_a_hanging_pair_is_killed_and_raises(tmp_path, monkeypatch):
    started: list = []
    spawn = torch.multiprocessing.start_processes

    def recording_spawn(*args, **kwargs):
        context = spawn(*args, **kwargs)
        started.append(context)
        return context

    monkeypatch.setattr(torch.multiprocessing, "start_processes", recording_spawn)
    with pytest.raises(TimeoutError, match="did not finish within 5 s"):
        launch("stall", tmp_path, timeout_s=5.0)
    (context,) = started
    assert all(not process.is_alive() for process in context.processes)
