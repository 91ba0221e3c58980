"""The types that py.typed promises: mypy checks the library (optimlib without .book)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_mypy_is_clean_on_the_library():
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if mypy is None:
        pytest.skip("mypy is not installed (it comes with the test extra)")
    # The configuration, strict about untyped definitions, is in pyproject.toml.
    result = subprocess.run(
        [mypy, "--no-incremental"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
