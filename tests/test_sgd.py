"""optimlib.SGD against torch.optim.SGD, its oracle."""

from __future__ import annotations

import pytest
import torch

import optimlib


def _make_problem(device: torch.device, seed: int = 0):
    """Parameters of several shapes (0-d included) and a smooth loss over them."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (), (2, 3, 4)]
    params = [
        torch.randn(shape, generator=generator, dtype=torch.float64).to(device).requires_grad_()
        for shape in shapes
    ]
    targets = [
        torch.randn(shape, generator=generator, dtype=torch.float64).to(device) for shape in shapes
    ]

    def loss_fn(tensors):
        return sum(
            ((t - y) ** 2).sum() + 0.1 * (t**4).sum() for t, y in zip(tensors, targets, strict=True)
        )

    return params, loss_fn


def _run(optimizer_cls, device, steps=60, **options):
    params, loss_fn = _make_problem(device)
    optimizer = optimizer_cls(params, **options)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(params).backward()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_torch_sgd_in_float64_over_many_steps(device, foreach, maximize):
    lr = 0.01 if not maximize else 1e-4
    ours = _run(optimlib.SGD, device, lr=lr, foreach=foreach, maximize=maximize)
    reference = _run(torch.optim.SGD, device, lr=lr, foreach=foreach, maximize=maximize)
    for mine, theirs in zip(ours, reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_foreach_equals_for_loop(device):
    for_loop = _run(optimlib.SGD, device, lr=0.02, foreach=False)
    foreach = _run(optimlib.SGD, device, lr=0.02, foreach=True)
    for a, b in zip(for_loop, foreach, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameter_groups_keep_their_own_lr(device):
    first = torch.ones(3, dtype=torch.float64, device=device, requires_grad=True)
    second = torch.ones(3, dtype=torch.float64, device=device, requires_grad=True)
    optimizer = optimlib.SGD([{"params": [first]}, {"params": [second], "lr": 0.5}], lr=0.1)
    (first.sum() + second.sum()).backward()
    optimizer.step()
    torch.testing.assert_close(first.detach(), torch.full_like(first, 0.9))
    torch.testing.assert_close(second.detach(), torch.full_like(second, 0.5))


def test_parameters_without_gradients_are_left_alone(device):
    used = torch.ones(2, device=device, requires_grad=True)
    unused = torch.ones(2, device=device, requires_grad=True)
    optimizer = optimlib.SGD([used, unused], lr=1.0)
    used.sum().backward()
    optimizer.step()
    assert unused.grad is None
    torch.testing.assert_close(unused.detach(), torch.ones(2, device=device))
    torch.testing.assert_close(used.detach(), torch.zeros(2, device=device))


def test_step_with_closure_returns_the_loss(device):
    weight = torch.tensor([2.0], device=device, requires_grad=True)
    optimizer = optimlib.SGD([weight], lr=0.25)

    def closure():
        optimizer.zero_grad()
        loss = (weight**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == 4.0
    assert weight.item() == 1.0  # 2 - 0.25 * (2 * 2)


def test_the_update_is_in_place_and_builds_no_graph(device):
    weight = torch.ones(4, device=device, requires_grad=True)
    storage = weight.data_ptr()
    optimizer = optimlib.SGD([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    assert weight.data_ptr() == storage
    assert weight.grad_fn is None and weight.is_leaf


def test_state_dict_loads_both_ways():
    weight = torch.ones(3, requires_grad=True)
    ours = optimlib.SGD([weight], lr=0.3, maximize=True)
    theirs = torch.optim.SGD([weight], lr=0.1)
    theirs.load_state_dict(ours.state_dict())
    assert theirs.param_groups[0]["lr"] == 0.3 and theirs.param_groups[0]["maximize"]
    ours.load_state_dict(torch.optim.SGD([weight], lr=0.7).state_dict())
    assert ours.param_groups[0]["lr"] == 0.7


def test_works_with_a_torch_scheduler():
    weight = torch.zeros(1, requires_grad=True)
    optimizer = optimlib.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        weight.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()
    # Steps of 1, 0.5 and 0.25 against a gradient of one.
    assert weight.item() == -1.75


def test_sparse_gradients_match_torch():
    def run(optimizer_cls):
        embedding = torch.nn.Embedding(10, 3, sparse=True)
        torch.nn.init.constant_(embedding.weight, 1.0)
        optimizer = optimizer_cls(embedding.parameters(), lr=0.1)
        for indices in ([1, 2], [2, 5, 5]):
            optimizer.zero_grad()
            embedding(torch.tensor(indices)).pow(2).sum().backward()
            optimizer.step()
        return embedding.weight.detach()

    torch.testing.assert_close(run(optimlib.SGD), run(torch.optim.SGD), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"lr": -0.1}, ValueError, "Invalid lr: -0.1"),
        ({"lr": float("nan")}, ValueError, "Invalid lr"),
        ({"lr": "fast"}, TypeError, "Invalid lr"),
        ({"foreach": "yes"}, TypeError, "Invalid foreach"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        optimlib.SGD([torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    ("params", "error", "fragment"),
    [
        ([torch.zeros(1), 3.0], TypeError, "element 1 of params is a float"),
        ([{"params": [torch.zeros(1), "w"]}], TypeError, "element 1 of parameter group 0"),
        (torch.zeros(2), TypeError, "single Tensor"),
        ([], ValueError, "empty parameter list"),
        (5, TypeError, "Invalid params"),
        ([{"lr": 0.1}], ValueError, "no 'params' key"),
    ],
)
def test_bad_params_raise_naming_the_argument(params, error, fragment):
    with pytest.raises(error, match=fragment):
        optimlib.SGD(params, lr=0.1)
