"""Fixtures of the book's tests: the built book, headless Chromium, closed figures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest

from tests.book.book_helpers import JUPYTER_BOOK, REPO_ROOT
from tests.book.chromium import Chromium, find_browser, install_with_apt

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the whole book once, with warnings as errors; return its HTML folder."""
    output = tmp_path_factory.mktemp("book")
    command = [
        *JUPYTER_BOOK,
        "build",
        str(REPO_ROOT),
        "--path-output",
        str(output),
        "-n",
        "-W",
        "--keep-going",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0 and not warnings, "\n".join(warnings) or log[-5000:]
    return output / "_build" / "html"


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    """Headless Chromium, installed with apt-get when missing and possible."""
    executable = find_browser()
    if executable is None:
        reason = install_with_apt()
        executable = find_browser()
        if executable is None:
            pytest.skip(f"Chromium is not installed and could not be installed: {reason}")
    return Chromium(executable)
