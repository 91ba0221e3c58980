"""What every test folder shares: the devices to run on. Needs only torch and pytest.

``tests/library`` holds optimlib's own tests, which run with torch, pytest and
hypothesis alone; ``tests/book`` the tests of the book's helpers, notebooks,
build and rendered pages; ``tests/repository`` the checks that keep the
repository's promises (install commands, packaging, types, the torch floor);
``tests/distributed`` optimlib's optimizers in two gloo processes (DDP,
ZeroRedundancyOptimizer, FSDP2, distributed checkpoints).
"""

from __future__ import annotations

import pytest
import torch

from optimlib import available_devices

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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny matrix products (Muon's Newton-Schulz).

    Each product is microseconds of work; on a busy two-core machine a second
    thread makes every one of them wait for it, forty times slower. Results do
    not depend on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64_default():
    """float64 as the default dtype, so that step counters and scalar state are float64."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)
