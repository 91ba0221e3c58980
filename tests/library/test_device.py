"""optimlib.default_device and available_devices."""

from __future__ import annotations

import pytest
import torch

import optimlib


def test_default_device_prefers_cuda_when_present(monkeypatch):
    monkeypatch.delenv("OPTIMLIB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert optimlib.default_device().type == expected


def test_environment_variable_overrides_the_choice(monkeypatch):
    monkeypatch.setenv("OPTIMLIB_DEVICE", "cpu")
    assert optimlib.default_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_says_so(monkeypatch):
    monkeypatch.setenv("OPTIMLIB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match=r"torch\.cuda\.is_available"):
        optimlib.default_device()


def test_available_devices_start_with_the_cpu_and_list_every_gpu():
    devices = optimlib.available_devices()
    assert devices[0] == torch.device("cpu")
    assert len(devices) == 1 + torch.cuda.device_count()


def test_tensors_can_be_made_on_every_listed_device(device):
    assert torch.zeros(2, device=device).device.type == device.type
