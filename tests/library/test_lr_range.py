"""optimlib.lr_range: the sweep's lrs, stopping rule, smoothing and reading; it leaves no trace."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

import optimlib
from optimlib.lr_range import LRRangeResult, lr_range_test
from optimlib.random_scale_sgd import RandomScaleSGD


def regression_problem(device, n=64, d=5, seed=0):
    """A least-squares problem whose curvature (and so its stable lr range) is known."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    inputs = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales
    targets = inputs @ torch.randn(d, 1, generator=generator, dtype=torch.float64)
    targets += 0.01 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    return inputs.to(device), targets.to(device)


def linear_model(device, d=5):
    torch.manual_seed(0)
    return nn.Linear(d, 1, bias=False).to(device=device, dtype=torch.float64)


class SmallNet(nn.Module):
    """Parameters, a BatchNorm's buffers (one of them an integer) and dropout."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1)
        )
        self.register_buffer("calls", torch.zeros(()), persistent=False)

    def forward(self, inputs):
        self.calls += 1
        return self.layers(inputs)


def batches_of(inputs, targets, size):
    return [(inputs[i : i + size], targets[i : i + size]) for i in range(0, len(inputs), size)]


def test_the_lrs_are_exactly_geometric_and_are_the_lrs_the_steps_use(device):
    inputs, targets = regression_problem(device)
    model = linear_model(device)
    optimizer = optimlib.SGD(model.parameters(), lr=0.5)
    used = []
    optimizer.register_step_pre_hook(lambda opt, *_: used.append(opt.param_groups[0]["lr"]))
    result = lr_range_test(
        model,
        optimizer,
        nn.MSELoss(),
        [(inputs, targets)],
        start_lr=1e-6,
        end_lr=1e-2,
        num_steps=41,
        diverge_factor=math.inf,
    )
    assert isinstance(result, LRRangeResult)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 41
    assert not result.stopped_early
    assert result.lrs[0] == 1e-6
    assert result.lrs[-1] == pytest.approx(1e-2, rel=1e-14)
    for i, lr in enumerate(result.lrs):
        assert lr == 1e-6 * (1e-2 / 1e-6) ** (i / 40)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-13
    assert ratios[0] == pytest.approx(10 ** (4 / 40), rel=1e-13)
    assert used == result.lrs
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_a_loader_shorter_than_the_sweep_is_restarted(device):
    inputs, targets = regression_problem(device, n=12)
    model = linear_model(device)
    seen = []
    loss = nn.MSELoss()
    batches = batches_of(inputs, targets, 4)  # 3 batches for 10 steps

    def recording_loss(outputs, batch_targets):
        seen.append(batch_targets)
        return loss(outputs, batch_targets)

    result = lr_range_test(
        model,
        optimlib.SGD(model.parameters()),
        recording_loss,
        batches,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=10,
    )
    assert len(result.lrs) == 10
    for step, batch_targets in enumerate(seen):
        assert torch.equal(batch_targets, batches[step % 3][1])


def test_an_exhausted_iterator_raises_and_still_restores(device):
    inputs, targets = regression_problem(device)
    model = linear_model(device)
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="yielded no batch"):
        lr_range_test(
            model,
            optimlib.SGD(model.parameters()),
            nn.MSELoss(),
            iter(batches_of(inputs, targets, 32)),
            num_steps=5,
        )
    assert torch.equal(model.weight.detach(), before)


def test_divergence_stops_the_sweep(device):
    inputs, targets = regression_problem(device)
    model = linear_model(device)
    result = lr_range_test(
        model,
        optimlib.SGD(model.parameters()),
        nn.MSELoss(),
        [(inputs, targets)],
        start_lr=1e-4,
        end_lr=1e3,
        num_steps=200,
    )
    assert result.stopped_early
    assert 10 < len(result.lrs) < 200
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)
    # The last step is the first whose smoothed loss passed 4x the best before it.
    assert result.smoothed[-1] > 4 * min(result.smoothed[:-1])
    for i in range(1, len(result.smoothed) - 1):
        assert result.smoothed[i] <= 4 * min(result.smoothed[:i])
    # A larger factor lets it run further; an infinite one only stops at inf or nan.
    patient = lr_range_test(
        model,
        optimlib.SGD(model.parameters()),
        nn.MSELoss(),
        [(inputs, targets)],
        start_lr=1e-4,
        end_lr=1e3,
        num_steps=200,
        diverge_factor=100.0,
    )
    assert len(patient.lrs) > len(result.lrs)
    assert patient.lrs[: len(result.lrs)] == result.lrs
    endless = lr_range_test(
        model,
        optimlib.SGD(model.parameters()),
        nn.MSELoss(),
        [(inputs, targets)],
        start_lr=1e-4,
        end_lr=1e3,
        num_steps=200,
        diverge_factor=math.inf,
    )
    assert len(endless.lrs) == 200 or not math.isfinite(endless.smoothed[-1])
    assert len(endless.lrs) > len(patient.lrs)


def sweep_over_losses(values, **options):
    """A range test whose batch losses are ``values``, whatever the lr (the loss reads
    the targets only), so the smoothing and the reading of the curve can be checked."""
    model = nn.Linear(1, 1)
    batches = [(torch.zeros(1, 1), torch.tensor(v)) for v in values]

    def loss_fn(outputs, target):
        return target + 0.0 * outputs.sum()

    options = {"num_steps": len(values), "diverge_factor": math.inf, **options}
    return lr_range_test(model, optimlib.SGD(model.parameters()), loss_fn, batches, **options)


def test_the_smoothed_curve_equals_a_hand_computation():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]
    result = sweep_over_losses(values, smoothing=0.5)
    assert result.losses == values
    # a_i = a_{i-1} / 2 + l_i / 2, s_i = a_i / (1 - 2^-(i+1)), written out:
    expected = [
        3.0,
        (0.25 * 3 + 0.5 * 1) / 0.75,
        (0.125 * 3 + 0.25 * 1 + 0.5 * 4) / 0.875,
        (0.0625 * 3 + 0.125 * 1 + 0.25 * 4 + 0.5 * 1) / 0.9375,
        (0.03125 * 3 + 0.0625 * 1 + 0.125 * 4 + 0.25 * 1 + 0.5 * 5) / 0.96875,
        (0.015625 * 3 + 0.03125 * 1 + 0.0625 * 4 + 0.125 * 1 + 0.25 * 5 + 0.5 * 9) / 0.984375,
    ]
    assert result.smoothed == pytest.approx(expected, rel=1e-15)
    assert result.minimum_lr == result.lrs[1]  # the lowest smoothed value
    assert result.suggested_lr == result.minimum_lr / 10
    assert sweep_over_losses(values, smoothing=0.0).smoothed == values


def test_the_minimum_and_the_steepest_descent_are_read_off_the_smoothed_curve():
    result = sweep_over_losses([5.0, 4.9, 4.0, 2.0, 1.5, 1.4, 1.45, 3.0], smoothing=0.0)
    # Slopes up to the minimum (index 5): -0.1, -0.5, -1.45, -1.25, -0.3, -0.1.
    assert result.minimum_lr == result.lrs[5]
    assert result.steepest_lr == result.lrs[2]
    assert result.suggested_lr == result.lrs[5] / 10


def test_the_default_smoothing_is_098():
    result = sweep_over_losses([2.0, 4.0])  # smoothing left at its default
    assert result.smoothed == pytest.approx([2.0, (0.98 * 0.02 * 2 + 0.02 * 4) / (1 - 0.98**2)])


def state_dicts_equal(first, second):
    if isinstance(first, torch.Tensor):
        return (
            isinstance(second, torch.Tensor)
            and first.dtype == second.dtype
            and first.device == second.device
            and torch.equal(first, second)
        )
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(
            state_dicts_equal(first[k], second[k]) for k in first
        )
    if isinstance(first, (list, tuple)):
        return len(first) == len(second) and all(
            state_dicts_equal(a, b) for a, b in zip(first, second, strict=True)
        )
    return type(first) is type(second) and first == second


OPTIMIZERS = {
    "optimlib.SGD": lambda p: optimlib.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "optimlib.Adam": lambda p: optimlib.Adam(p, lr=1e-2),
    "optimlib.AdamW tensor lr": lambda p: optimlib.AdamW(p, lr=torch.tensor(1e-2)),
    "torch.optim.Adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "torch.optim.RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "torch.optim.LBFGS": lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=3),
    "optimlib.LBFGS": lambda p: optimlib.LBFGS(p, lr=0.5, max_iter=3),
    "RandomScaleSGD": lambda p: RandomScaleSGD(p, lr=0.05, seed=3),
}


def train(model, optimizer, batches, steps, loss_fn):
    losses = []
    for step in range(steps):
        inputs, targets = batches[step % len(batches)]

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            return loss.detach()

        losses.append(float(optimizer.step(closure)))
    return losses


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_model_optimizer_and_random_state_are_restored_exactly(name, device):
    inputs, targets = regression_problem(device)
    inputs, targets = inputs.float(), targets.float()
    batches = batches_of(inputs, targets, 16)
    loss_fn = nn.MSELoss()

    def setup():
        torch.manual_seed(1)
        model = SmallNet().to(device)
        optimizer = OPTIMIZERS[name](model.parameters())
        train(model, optimizer, batches, 3, loss_fn)  # state that is not the initial one
        model.layers[0].weight.grad = torch.full_like(model.layers[0].weight, 0.5)
        model.layers[4].bias.grad = None
        model.eval()
        model.layers[1].train()
        return model, optimizer

    model, optimizer = setup()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_calls = model.calls.clone()
    before_optimizer = copy.deepcopy(optimizer.state_dict())
    weight_grad = model.layers[0].weight.grad
    modes = [m.training for m in model.modules()]
    torch.manual_seed(123)
    result = lr_range_test(
        model, optimizer, loss_fn, batches, start_lr=1e-4, end_lr=10.0, num_steps=12
    )
    assert len(result.lrs) >= 2
    assert state_dicts_equal(model.state_dict(), before_model)
    assert torch.equal(model.calls, before_calls)
    assert state_dicts_equal(optimizer.state_dict(), before_optimizer)
    assert model.layers[0].weight.grad is weight_grad
    assert torch.equal(weight_grad, torch.full_like(weight_grad, 0.5))
    assert model.layers[4].bias.grad is None
    assert [m.training for m in model.modules()] == modes
    after_sweep = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_sweep, torch.rand(3))

    # Training on after the sweep is training as if it had never run.
    model.train()
    torch.manual_seed(7)
    continued = train(model, optimizer, batches, 5, loss_fn)
    reference_model, reference_optimizer = setup()
    reference_model.train()
    torch.manual_seed(7)
    assert continued == train(reference_model, reference_optimizer, batches, 5, loss_fn)
    assert state_dicts_equal(model.state_dict(), reference_model.state_dict())


def test_the_suggestion_lies_in_the_stable_range_of_a_quadratic(device):
    inputs, targets = regression_problem(device, n=256)
    # Full-batch gradient descent on the mean squared error is stable for lr < 2 / L,
    # with L the largest eigenvalue of the Hessian 2 X^T X / n.
    hessian = 2 * inputs.T @ inputs / len(inputs)
    curvature = torch.linalg.eigvalsh(hessian.cpu()).max().item()
    model = linear_model(device)
    result = lr_range_test(
        model,
        optimlib.SGD(model.parameters()),
        nn.MSELoss(),
        [(inputs, targets)],
        start_lr=1e-5,
        end_lr=1e2,
        num_steps=100,
    )
    assert result.stopped_early
    assert result.lrs[-1] > 2 / curvature  # it went past the edge before stopping
    # The raw loss goes on falling a little past 2 / L (the unstable direction starts
    # from a residual near zero and needs steps to grow), so the minimum overshoots the
    # edge; a tenth of it, and the steepest descent, are inside.
    for lr in (result.suggested_lr, result.steepest_lr):
        assert 1e-2 / curvature < lr < 2 / curvature
    assert result.suggested_lr == result.minimum_lr / 10
    # Training at the suggestion converges.
    trained = linear_model(device)
    optimizer = optimlib.SGD(trained.parameters(), lr=result.suggested_lr)
    losses = train(trained, optimizer, [(inputs, targets)], 300, nn.MSELoss())
    assert losses[-1] < 0.05 * losses[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start_lr": 0.0}, "Invalid start_lr value: 0.0"),
        ({"start_lr": 1.0, "end_lr": 1.0}, "Invalid end_lr value: 1.0"),
        ({"num_steps": 1}, "Invalid num_steps value: 1"),
        ({"num_steps": 10.0}, "Invalid num_steps value: 10.0"),
        ({"smoothing": 1.0}, "Invalid smoothing value: 1.0"),
        ({"diverge_factor": 1.0}, "Invalid diverge_factor value: 1.0"),
    ],
)
def test_bad_arguments_raise_before_anything_changes(options, message):
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    optimizer = optimlib.SGD(model.parameters())
    batches = [(torch.ones(1, 2), torch.ones(1, 1))]
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):  # Type: 10.0 steps
        lr_range_test(model, optimizer, nn.MSELoss(), batches, **options)
    assert torch.equal(model.weight.detach(), before)
    assert optimizer.state_dict()["state"] == {}
