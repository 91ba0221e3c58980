"""The benchmark runs: a few tiny tensors, one round, so that it cannot rot unnoticed.

It asserts nothing about speed (a benchmark measures, a test must not time):
only that each table prints a row for each implementation.
"""

from __future__ import annotations

import subprocess
import sys

from tests.repository.project_files import REPO_ROOT


def test_step_time_prints_its_time_and_memory_tables():
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "step_time.py")]
    command += ["--tensors", "3", "--smallest", "100", "--largest", "1000"]
    command += ["--rounds", "1", "--steps", "1", "--cases", "Adam", "Rprop"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    for case, implementations in (("Adam", ("for-loop", "foreach", "fused")), ("Rprop", ())):
        printed = [row for row in rows if row[:1] == [case]]
        assert printed, done.stdout
        for implementation in implementations:
            assert sum(row[1] == implementation for row in printed) == 2, done.stdout
    assert "calibration" in done.stdout and "fused/fe" in done.stdout
