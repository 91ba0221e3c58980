"""optimlib.book.data: real CIFAR-10 files read through the chapter's path, and the stand-in.

No test downloads CIFAR-10. Instead a tiny CIFAR-10 is written in the real
on-disk format, as ``torchvision.datasets.CIFAR10`` reads it: a folder
``cifar-10-batches-py`` holding pickled dicts ``data_batch_1`` ...
``data_batch_5`` and ``test_batch`` (``"data"``: uint8, one row of 3072
bytes per image, the 1024 red values then the green then the blue, row by
row; ``"labels"``: a list of ints) and ``batches.meta`` (``"label_names"``).
The real files are Python 2 pickles whose ``str`` keys torchvision reads
with ``encoding="latin1"``, so they arrive as Python 3 ``str``; the files
here are written with ``str`` keys and load identically.

torchvision then checks every file against the MD5 published for the real
CIFAR-10 (``CIFAR10.train_list``, ``test_list`` and ``meta``), which a
made-up file cannot match. The only thing patched, for these tests alone, is
that list of expected checksums: it gets the checksums of the files written
here. The check itself still runs (a missing or altered file still fails it,
see below), and everything else (file names, unpickling, the reshape to
images, the transforms) is the code the chapter runs, through
``cifar10_loaders(source="cifar10")``.
"""

from __future__ import annotations

import hashlib
import pickle
import re

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from optimlib.book.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DIGIT_CLASSES,
    DigitsStandIn,
    cifar10_datasets,
    cifar10_loaders,
)

TRAIN_PER_BATCH = 4
TEST_IMAGES = 6


def _image_bytes(index):
    """Image ``index``: red, green and blue planes, each a distinct ramp (to catch mix-ups)."""
    pixel = np.arange(1024)
    planes = [(pixel + 37 * index + 80 * channel) % 256 for channel in range(3)]
    return np.concatenate(planes).astype(np.uint8)


def _write(path, entry):
    with open(path, "wb") as file:
        pickle.dump(entry, file, protocol=2)


def write_tiny_cifar10(root):
    """A CIFAR-10 of 5 x 4 training and 6 test images; returns their labels, by split."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {"train": [], "test": []}
    index = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = TEST_IMAGES if name == "test_batch" else TRAIN_PER_BATCH
        images = np.stack([_image_bytes(index + k) for k in range(count)])
        batch_labels = [(index + k) % 10 for k in range(count)]
        _write(
            folder / name,
            {
                "batch_label": f"{name} of a tiny CIFAR-10",
                "labels": batch_labels,
                "data": images,
                "filenames": [f"image_{index + k}.png" for k in range(count)],
            },
        )
        labels["test" if name == "test_batch" else "train"].extend(batch_labels)
        index += count
    _write(
        folder / "batches.meta",
        {"num_cases_per_batch": TRAIN_PER_BATCH, "label_names": list(CIFAR10_CLASSES)},
    )
    return labels


def _md5(path):
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """The tiny CIFAR-10's root, with torchvision expecting its files' checksums."""
    labels = write_tiny_cifar10(tmp_path)
    folder = tmp_path / CIFAR10.base_folder
    monkeypatch.setattr(
        CIFAR10, "train_list", [[name, _md5(folder / name)] for name, _ in CIFAR10.train_list]
    )
    monkeypatch.setattr(
        CIFAR10, "test_list", [[name, _md5(folder / name)] for name, _ in CIFAR10.test_list]
    )
    meta = CIFAR10.meta["filename"]
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / meta)})
    return tmp_path, labels


def _expected_image(index, normalize=True):
    hwc = _image_bytes(index).reshape(3, 32, 32).astype(np.float32) / 255
    image = torch.from_numpy(hwc)
    if normalize:
        mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
        image = (image - mean) / std
    return image


def test_cifar10_files_load_through_the_chapters_loaders(tiny_cifar10):
    root, labels = tiny_cifar10
    data = cifar10_loaders(root, source="cifar10", batch_size=8, download=False)
    assert data.source == "cifar10"
    assert data.classes == CIFAR10_CLASSES
    assert data.description.startswith("CIFAR-10 (torchvision): 20 training and 6 test images")
    assert isinstance(data.train_set, CIFAR10) and isinstance(data.test_set, CIFAR10)
    assert len(data.train_set) == 5 * TRAIN_PER_BATCH and len(data.test_set) == TEST_IMAGES

    # The test loader keeps the files' order: images and labels as written.
    images, targets = next(iter(data.test))
    assert images.shape == (TEST_IMAGES, 3, 32, 32) and images.dtype == torch.float32
    assert targets.dtype == torch.int64 and targets.tolist() == labels["test"]
    first_test = 5 * TRAIN_PER_BATCH
    for k in range(TEST_IMAGES):
        torch.testing.assert_close(images[k], _expected_image(first_test + k))

    # The training loader shuffles, deterministically, and covers every image once.
    batches = list(data.train)
    assert [len(b[1]) for b in batches] == [8, 8, 4]
    seen = torch.cat([b[0] for b in batches])
    seen_labels = torch.cat([b[1] for b in batches])
    assert sorted(seen_labels.tolist()) == sorted(labels["train"])
    assert seen_labels.tolist() != labels["train"]
    for image, label in zip(seen, seen_labels, strict=True):
        (index,) = [
            i for i in range(first_test) if torch.allclose(image, _expected_image(i), atol=1e-6)
        ]
        assert labels["train"][index] == label
    again = cifar10_loaders(root, source="cifar10", batch_size=8)
    assert torch.equal(torch.cat([b[1] for b in again.train]), seen_labels)


def test_cifar10_unnormalized_pixels_are_fractions_of_255(tiny_cifar10):
    root, _ = tiny_cifar10
    train_set, _ = cifar10_datasets(root, source="cifar10", normalize=False)
    image, label = train_set[5]
    torch.testing.assert_close(image, _expected_image(5, normalize=False))
    assert label == 5 and train_set.classes == list(CIFAR10_CLASSES)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_a_corrupt_cifar10_file_is_refused_with_a_hint(tiny_cifar10):
    root, _ = tiny_cifar10
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(RuntimeError, match=re.escape("source='standin'")):
        cifar10_loaders(root, source="cifar10")


def test_missing_cifar10_files_say_how_to_get_them(tmp_path):
    with pytest.raises(RuntimeError, match="download=True"):
        cifar10_loaders(tmp_path, source="cifar10", download=False)


def test_an_unknown_source_is_refused():
    with pytest.raises(ValueError, match=re.escape("Invalid source: 'cifar'")):
        cifar10_loaders(source="cifar")


@pytest.fixture(scope="module")
def stand_in():
    return cifar10_loaders(source="standin", batch_size=64, seed=0)


def test_the_stand_in_has_cifar10s_shape_and_ten_digit_classes(stand_in):
    assert stand_in.source == "standin"
    assert "not CIFAR-10" in stand_in.description
    assert stand_in.classes == DIGIT_CLASSES == tuple("0123456789")
    train_set, test_set = stand_in.train_set, stand_in.test_set
    assert isinstance(train_set, DigitsStandIn)
    assert (len(train_set), len(test_set)) == (1433, 364)
    image, label = train_set[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int)
    # Each class is held out in proportion: every fifth image of it.
    counts = np.bincount(test_set.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert np.bincount(train_set.targets, minlength=10).min() >= 139
    # Grey images: three equal channels, normalized with the training split's statistics.
    images = train_set.images
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    images, labels = next(iter(stand_in.train))
    assert images.shape == (64, 3, 32, 32) and labels.shape == (64,)
    assert labels.dtype == torch.int64


def test_the_stand_in_is_the_upsampled_digits():
    from sklearn.datasets import load_digits

    _, test_set = cifar10_datasets(source="standin", normalize=False)
    digits = load_digits()
    first = test_set.images[0, 0]  # the file's first image is held out: every fifth, from it
    assert test_set.targets[0] == digits.target[0]
    # Averaging each 4 x 4 block of the upsampled image gives back roughly the 8 x 8 digit.
    blocks = first.reshape(8, 4, 8, 4).mean(dim=(1, 3))
    original = torch.as_tensor(digits.images[0] / 16, dtype=torch.float32)
    assert (blocks - original).abs().max() < 0.25
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_the_stand_in_is_deterministic():
    first, again = (cifar10_loaders(source="standin", batch_size=64, seed=0) for _ in range(2))
    assert torch.equal(again.train_set.images, first.train_set.images)
    assert torch.equal(again.test_set.images, first.test_set.images)
    assert again.test_set.targets == first.test_set.targets
    epoch = [labels for _, labels in first.train]
    assert all(torch.equal(a, b) for a, b in zip(epoch, [y for _, y in again.train], strict=True))
    # A new epoch reshuffles, and another seed shuffles differently.
    assert not torch.equal(epoch[0], next(iter(first.train))[1])
    other = cifar10_loaders(source="standin", batch_size=64, seed=1)
    assert not torch.equal(epoch[0], next(iter(other.train))[1])
