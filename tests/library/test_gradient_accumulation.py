"""Gradient accumulation: k micro-batches, then one step, equal one step on the whole batch.

``backward()`` adds into ``.grad``, so summing the micro-batches' gradients is
free; what must be right is the weighting. The mean loss of the full batch is
the size-weighted mean of the micro-batches' mean losses, so each micro-batch's
loss is scaled by ``len(micro) / len(batch)`` (``1 / k`` when the sizes are
equal). The optimizer then sees the full batch's gradient, and any optimizer
takes the same step. The model here has no batch normalization or dropout,
which would make a micro-batch's forward pass differ from the full batch's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimlib

OPTIMIZERS = {
    "SGD": lambda params: optimlib.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "SGD-nesterov": lambda params: optimlib.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "Adam": lambda params: optimlib.Adam(params, lr=1e-2),
    "Adam-amsgrad": lambda params: optimlib.Adam(params, lr=1e-2, amsgrad=True),
    "AdamW": lambda params: optimlib.AdamW(params, lr=1e-2, weight_decay=0.1),
}
STEPS = 4


def small_cnn(device):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
    ).to(device=device, dtype=torch.float64)


def data(device, n=12):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS, n, 3, 8, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (STEPS, n), generator=generator)
    return images.to(device), labels.to(device)


def train_full_batch(model, optimizer, images, labels):
    loss_fn = nn.CrossEntropyLoss()
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_fn(model(images[step]), labels[step]).backward()
        optimizer.step()


def train_accumulating(model, optimizer, images, labels, sizes, weighting):
    loss_fn = nn.CrossEntropyLoss()
    for step in range(STEPS):
        optimizer.zero_grad()
        start, total = 0, sum(sizes)
        for size in sizes:
            inputs = images[step, start : start + size]
            targets = labels[step, start : start + size]
            loss = loss_fn(model(inputs), targets)
            weight = {"by size": size / total, "1/k": 1 / len(sizes), "none": 1.0}[weighting]
            (loss * weight).backward()
            start += size
        optimizer.step()


def trained_pair(name, device, sizes, weighting):
    images, labels = data(device)
    full, accumulated = small_cnn(device), small_cnn(device)
    full_optimizer = OPTIMIZERS[name](full.parameters())
    accumulated_optimizer = OPTIMIZERS[name](accumulated.parameters())
    train_full_batch(full, full_optimizer, images, labels)
    train_accumulating(accumulated, accumulated_optimizer, images, labels, sizes, weighting)
    return full, accumulated, full_optimizer, accumulated_optimizer


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    ("sizes", "weighting"),
    [([4, 4, 4], "1/k"), ([4, 4, 4], "by size"), ([5, 4, 3], "by size"), ([1] * 12, "1/k")],
    ids=["equal-1/k", "equal-by-size", "unequal-by-size", "one-by-one"],
)
def test_accumulated_micro_batches_equal_the_full_batch(name, sizes, weighting, device):
    full, accumulated, full_optimizer, accumulated_optimizer = trained_pair(
        name, device, sizes, weighting
    )
    for p, q in zip(full.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-11, atol=1e-13)
    full_state = full_optimizer.state_dict()["state"]
    accumulated_state = accumulated_optimizer.state_dict()["state"]
    assert accumulated_state.keys() == full_state.keys()
    for index, state in full_state.items():
        assert accumulated_state[index].keys() == state.keys()
        for key, value in state.items():
            torch.testing.assert_close(accumulated_state[index][key], value, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    ("sizes", "weighting"),
    [([5, 4, 3], "1/k"), ([4, 4, 4], "none")],
    ids=["unequal-sizes-weighted-1/k", "loss-not-divided"],
)
def test_a_wrong_weighting_changes_an_sgd_run(sizes, weighting):
    # The equality above is not automatic: SGD's step is proportional to the gradient,
    # so a gradient weighted wrongly (or k times too large) moves it elsewhere.
    full, accumulated, _, _ = trained_pair("SGD", torch.device("cpu"), sizes, weighting)
    differences = [
        (p - q).abs().max().item()
        for p, q in zip(full.parameters(), accumulated.parameters(), strict=True)
    ]
    assert max(differences) > 1e-4
