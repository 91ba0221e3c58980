"""Shared fixtures, and the environment every test (and nbval's kernel) runs in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from optimlib import available_devices
from tests.book_helpers import JUPYTER_BOOK
from tests.chromium import Chromium, find_browser, install_with_apt

REPO_ROOT = Path(__file__).resolve().parent.parent

# The kernels nbval starts inherit this environment. The IPython profile kept in
# tests/ipython sets the kernel's log level to ERROR, so that its start-up
# chatter on stderr (a TCP warning on some machines) cannot fail strict nbval.
os.environ["IPYTHONDIR"] = str(REPO_ROOT / "tests" / "ipython")
matplotlib.use("Agg")

DEVICES = available_devices()


def pytest_report_header(config: pytest.Config) -> str:
    cuda = (
        f"CUDA: {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "CUDA: not available, CUDA tests are skipped"
    )
    return f"torch {torch.__version__}; devices: {', '.join(map(str, DEVICES))}; {cuda}"


def _device_params() -> list:
    params = [pytest.param(device, id=str(device)) for device in DEVICES]
    if not torch.cuda.is_available():
        params.append(
            pytest.param(
                torch.device("cuda"),
                id="cuda",
                marks=pytest.mark.skip(reason="no CUDA device on this machine"),
            )
        )
    return params


@pytest.fixture(params=_device_params())
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device present: the CPU always, each CUDA device when there is one."""
    return request.param


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
