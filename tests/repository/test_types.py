"""The types that py.typed promises: mypy checks the library (optimlib without .book)."""

from __future__ import annotations

import subprocess

from tests.repository.project_files import REPO_ROOT, tool


def test_mypy_is_clean_on_the_library():
    # The configuration, strict about untyped definitions, is in pyproject.toml.
    result = subprocess.run(
        [tool("mypy"), "--no-incremental"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
