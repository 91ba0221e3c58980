"""Choosing where tensors live.

Notebooks and tests never hard-code ``"cpu"``: they ask :func:`default_device`
for the best device present, or iterate over :func:`available_devices`.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENVIRONMENT_VARIABLE = "OPTIMLIB_DEVICE"


def default_device() -> torch.device:
    """Return the device the book's examples run on.

    CUDA when a GPU is visible, the CPU otherwise. Setting the environment
    variable ``OPTIMLIB_DEVICE`` (for example to ``"cpu"`` or ``"cuda:1"``)
    overrides the choice.
    """
    requested = os.environ.get(DEVICE_ENVIRONMENT_VARIABLE)
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"{DEVICE_ENVIRONMENT_VARIABLE}={requested!r} asks for CUDA, "
                "but torch.cuda.is_available() is False"
            )
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def available_devices() -> list[torch.device]:
    """Return the CPU followed by every visible CUDA device."""
    devices = [torch.device("cpu")]
    devices += [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return devices
