"""The images of Chapter 9: CIFAR-10, or an offline stand-in of the same shape.

One switch, ``source``, picks where the images come from:

``"cifar10"``
    The real CIFAR-10 (Krizhevsky 2009: 50,000 training and 10,000 test
    colour images of 32 x 32 pixels in 10 classes), read by
    ``torchvision.datasets.CIFAR10`` from ``root`` (downloaded there, about
    170 MB, with ``download=True``). Each image becomes a float tensor in
    [0, 1] (``ToTensor``), then is normalized per channel with the training
    set's mean and standard deviation (``CIFAR10_MEAN``, ``CIFAR10_STD``).

``"standin"``
    A stand-in that needs no download and trains in seconds on a CPU: the
    1,797 handwritten digits of scikit-learn's ``load_digits`` (8 x 8 grey
    images, 10 classes), upsampled bilinearly to 32 x 32 and repeated over 3
    channels, so that a network written for CIFAR-10 runs on it unchanged. A
    fixed split (every fifth image of each class, the first included) holds
    out 364 images as its test set, leaving 1,433 for training; the images
    are normalized like CIFAR-10's, with the stand-in's own training
    statistics. Its numbers are not CIFAR-10's numbers: digits are far
    easier to tell apart.

:func:`cifar10_loaders` returns the datasets, their loaders, the class names and
a one-line ``description`` of the source, which a chapter prints so that every
number it reports says which images produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DIGIT_CLASSES",
    "SOURCES",
    "DigitsStandIn",
    "ImageData",
    "cifar10_datasets",
    "cifar10_loaders",
]

Source = Literal["standin", "cifar10"]
SOURCES: tuple[str, ...] = ("standin", "cifar10")

#: CIFAR-10's classes, in the order of its labels 0-9 (as its ``batches.meta`` lists them).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: Per-channel (red, green, blue) mean of CIFAR-10's 50,000 training images, over
#: every pixel of every image, as a fraction of 255.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: Per-channel standard deviation of the same pixels, as a fraction of 255.
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
#: The stand-in's classes, the digit each image shows.
DIGIT_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))


class DigitsStandIn(Dataset[tuple[Tensor, int]]):
    """scikit-learn's digits as a CIFAR-10-shaped dataset: ``(3, 32, 32)`` images, 10 classes.

    Like ``torchvision.datasets.CIFAR10``, ``dataset[i]`` is ``(image, label)``
    with an ``int`` label, and ``classes`` and ``targets`` list the class names
    and every label. ``images`` holds all images as one float32 tensor.
    """

    classes: tuple[str, ...] = DIGIT_CLASSES

    def __init__(self, images: Tensor, targets: Sequence[int]) -> None:
        self.images = images
        self.targets = list(targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], self.targets[index]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class ImageData:
    """A source's two datasets, their loaders, its class names, and what it is."""

    source: str
    train_set: Dataset[Any]
    test_set: Dataset[Any]
    train: DataLoader[Any]
    test: DataLoader[Any]
    classes: tuple[str, ...]
    description: str


def cifar10_datasets(
    root: str | Path = "data",
    *,
    source: Source = "standin",
    download: bool = False,
    normalize: bool = True,
) -> tuple[Dataset[Any], Dataset[Any]]:
    """The training and test datasets of ``source`` (see the module's description).

    Args:
        root: the folder holding ``cifar-10-batches-py`` (the real CIFAR-10
            only; the stand-in reads nothing from disk).
        source: ``"cifar10"`` or ``"standin"``.
        download: fetch CIFAR-10 into ``root`` if it is not there yet.
        normalize: subtract each channel's training mean and divide by its
            standard deviation; ``False`` leaves the pixels in [0, 1].
    """
    _check_source(source)
    if source == "standin":
        return _digits_stand_in(normalize)
    return _cifar10(root, download, normalize)


def cifar10_loaders(
    root: str | Path = "data",
    *,
    source: Source = "standin",
    batch_size: int = 64,
    download: bool = False,
    normalize: bool = True,
    seed: int = 0,
    num_workers: int = 0,
) -> ImageData:
    """Loaders over ``source``'s training set (shuffled) and test set (in order).

    The training loader reshuffles every epoch from its own generator, seeded
    with ``seed``, so a run's batches are the same each time it is repeated
    and do not depend on other uses of torch's global generator. Batches are
    ``(images, labels)``: float32 ``(batch_size, 3, 32, 32)`` and int64
    ``(batch_size,)``; the last batch of an epoch may be smaller.

    Args:
        root, source, download, normalize: as in :func:`cifar10_datasets`.
        batch_size: images per batch, for both loaders.
        seed: seeds the training loader's shuffling.
        num_workers: processes that prepare batches (0: the main process).
    """
    train_set, test_set = cifar10_datasets(
        root, source=source, download=download, normalize=normalize
    )
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
    )
    test = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    classes = tuple(getattr(train_set, "classes", ()))
    sizes = f"{len(train_set):,} training and {len(test_set):,} test images"
    if source == "cifar10":
        description = f"CIFAR-10 (torchvision): {sizes}, 3x32x32, 10 classes"
    else:
        description = (
            f"offline stand-in, not CIFAR-10: scikit-learn's 8x8 digits upsampled to "
            f"3x32x32, {sizes}, 10 classes"
        )
    return ImageData(source, train_set, test_set, train, test, classes, description)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        allowed = " or ".join(repr(s) for s in SOURCES)
        raise ValueError(f"Invalid source: {source!r} (must be {allowed})")


def _cifar10(
    root: str | Path, download: bool, normalize: bool
) -> tuple[Dataset[Any], Dataset[Any]]:
    from torchvision import datasets, transforms

    steps: list[Any] = [transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD))
    transform = transforms.Compose(steps)
    try:
        train = datasets.CIFAR10(root, train=True, download=download, transform=transform)
        test = datasets.CIFAR10(root, train=False, download=download, transform=transform)
    except RuntimeError as error:
        raise RuntimeError(
            f"{error} (looked in {Path(root) / 'cifar-10-batches-py'}). Pass download=True "
            "to fetch CIFAR-10, or source='standin' to run offline on the stand-in."
        ) from error
    return train, test


def _digits_stand_in(normalize: bool) -> tuple[DigitsStandIn, DigitsStandIn]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    large = torch.nn.functional.interpolate(grey, size=(32, 32), mode="bilinear")
    images = large.repeat(1, 3, 1, 1)  # bilinear weights are convex: still in [0, 1]
    labels = np.asarray(digits.target)
    held_out = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        held_out[np.flatnonzero(labels == digit)[::5]] = True
    train_index = torch.as_tensor(np.flatnonzero(~held_out))
    test_index = torch.as_tensor(np.flatnonzero(held_out))
    train_images, test_images = images[train_index], images[test_index]
    if normalize:
        mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
        std = train_images.std(dim=(0, 2, 3), keepdim=True)
        train_images = (train_images - mean) / std
        test_images = (test_images - mean) / std
    return (
        DigitsStandIn(train_images, labels[~held_out].tolist()),
        DigitsStandIn(test_images, labels[held_out].tolist()),
    )
