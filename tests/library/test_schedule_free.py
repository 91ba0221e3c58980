"""ScheduleFreeAdamW against a plain float64 transcription of the paper's Algorithm 1.

Also: the train/eval switch, foreach against the for-loop, checkpoints in
either mode, the test kit, and the BatchNorm helper.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from optimlib.schedule_free import ScheduleFreeAdamW, update_bn
from optimlib.testing import check_optimizer

SHAPES = [(4, 3), (6,), ()]


def gradient_at(points, targets, t):
    """A stochastic gradient of sum((w - target)^2 + 0.1 sin(3w)) at step t (1, 2, ...).

    The same function for both sides. The noise, drawn afresh at each step from
    a generator seeded with t, keeps the second moment away from zero, where
    Adam's g / (sqrt(v) + eps) would magnify rounding into visible differences.
    """
    generator = torch.Generator().manual_seed(t)
    return [
        2 * (w - c) + 0.3 * torch.cos(3 * w) + 0.5 * noise(w, generator)
        for w, c in zip(points, targets, strict=True)
    ]


def noise(like, generator):
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def paper_schedule_free_adamw(
    initial,
    targets,
    lrs,
    *,
    beta1,
    beta2,
    eps,
    weight_decay,
    warmup_steps,
    r=0.0,
    weight_lr_power=2.0,
):
    """Algorithm 1 of Defazio et al. (2024), Schedule-Free AdamW, with x, y and z kept apart.

    ``lrs[t - 1]`` is the learning rate of step t. Line 10's weights are the
    paper's gamma_t^2 when r = 0, weight_lr_power = 2 and the rates never
    fall; in general t^r (max_{i<=t} gamma_i)^weight_lr_power.
    """
    x = [w.clone() for w in initial]
    z = [w.clone() for w in initial]  # z_1 = x_1
    v = [torch.zeros_like(w) for w in initial]  # v_0 = 0
    gammas, weights = [], []
    for t, lr in enumerate(lrs, start=1):
        y = [(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x, strict=True)]
        g = gradient_at(y, targets, t)
        v = [beta2 * vi + (1 - beta2) * gi**2 for vi, gi in zip(v, g, strict=True)]
        warmup = min(1.0, t / warmup_steps) if warmup_steps > 0 else 1.0
        gamma = lr * math.sqrt(1 - beta2**t) * warmup
        z = [
            zi - gamma * gi / (torch.sqrt(vi) + eps) - gamma * weight_decay * yi
            for zi, gi, vi, yi in zip(z, g, v, y, strict=True)
        ]
        gammas.append(gamma)
        if r == 0 and weight_lr_power == 2 and gamma == max(gammas):
            weights.append(gamma**2)
        else:
            weights.append(t**r * max(gammas) ** weight_lr_power)
        c = weights[-1] / sum(weights)
        x = [(1 - c) * xi + c * zi for xi, zi in zip(x, z, strict=True)]
    y = [(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x, strict=True)]
    return x, y, z, v


def make_problem(device, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    initial = [torch.randn(s, generator=generator, dtype=dtype).to(device) for s in SHAPES]
    targets = [torch.randn(s, generator=generator, dtype=dtype).to(device) for s in SHAPES]
    return initial, targets


def run(optimizer, params, targets, steps, scheduler=None):
    start = optimizer.param_groups[0]["k"]
    for t in range(start + 1, start + steps + 1):
        points = [p.detach() for p in params]
        for p, g in zip(params, gradient_at(points, targets, t), strict=True):
            p.grad = g
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


PAPER_CASES = [
    {"lr": 0.02},
    {"lr": 0.05, "weight_decay": 0.1, "warmup_steps": 20},
    {
        "lr": 0.01,
        "betas": (0.8, 0.99),
        "eps": 1e-6,
        "weight_decay": 0.5,
        "warmup_steps": 7,
        "r": 1.0,
        "weight_lr_power": 1.0,
    },
    {"lr": 0.03, "betas": (0.95, 0.9), "warmup_steps": 150},  # still warming up at the end
]
STEPS = 120


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("options", PAPER_CASES, ids=str)
def test_matches_the_papers_algorithm(options, foreach, device):
    initial, targets = make_problem(device)
    params = [w.clone().requires_grad_() for w in initial]
    optimizer = ScheduleFreeAdamW(params, foreach=foreach, **options)
    run(optimizer, params, targets, STEPS)
    beta1, beta2 = options.get("betas", (0.9, 0.999))
    x, y, z, v = paper_schedule_free_adamw(
        initial,
        targets,
        [options["lr"]] * STEPS,
        beta1=beta1,
        beta2=beta2,
        eps=options.get("eps", 1e-8),
        weight_decay=options.get("weight_decay", 0.0),
        warmup_steps=options.get("warmup_steps", 0),
        r=options.get("r", 0.0),
        weight_lr_power=options.get("weight_lr_power", 2.0),
    )
    for p, yi, zi, vi in zip(params, y, z, v, strict=True):
        torch.testing.assert_close(p.detach(), yi, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(optimizer.state[p]["z"], zi, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(optimizer.state[p]["exp_avg_sq"], vi, rtol=1e-12, atol=1e-14)
    optimizer.eval()
    for p, xi in zip(params, x, strict=True):
        torch.testing.assert_close(p.detach(), xi, rtol=1e-12, atol=1e-12)
    assert optimizer.param_groups[0]["k"] == STEPS


def test_a_falling_learning_rate_keeps_the_largest_in_the_weights():
    initial, targets = make_problem("cpu")
    params = [w.clone().requires_grad_() for w in initial]
    optimizer = ScheduleFreeAdamW(params, lr=0.04, weight_decay=0.05, warmup_steps=5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.25)
    run(optimizer, params, targets, 80, scheduler)
    lrs = [0.04 * 0.25 ** (t // 30) for t in range(80)]
    x, _, _, _ = paper_schedule_free_adamw(
        initial, targets, lrs, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05, warmup_steps=5
    )
    optimizer.eval()
    for p, xi in zip(params, x, strict=True):
        torch.testing.assert_close(p.detach(), xi, rtol=1e-12, atol=1e-12)
    assert optimizer.param_groups[0]["lr_max"] == max(
        0.04 * math.sqrt(1 - 0.999**t) for t in range(5, 31)
    )


def test_the_first_step_puts_the_average_on_z():
    # c_2 = w_1 / w_1 = 1, whatever the warm-up: x_2 = z_2.
    weight = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    optimizer = ScheduleFreeAdamW([weight], lr=0.1, warmup_steps=10)
    weight.grad = torch.tensor([0.5, 3.0], dtype=torch.float64)
    optimizer.step()
    group = optimizer.param_groups[0]
    assert group["scheduled_lr"] == pytest.approx(0.1 * math.sqrt(1 - 0.999) / 10, rel=1e-15)
    optimizer.eval()
    torch.testing.assert_close(weight.detach(), optimizer.state[weight]["z"], rtol=1e-15, atol=0)


def test_passes_the_optimizer_test_kit():
    report = check_optimizer(
        lambda params: ScheduleFreeAdamW(params, lr=0.05, weight_decay=0.1, warmup_steps=3)
    )
    assert len(report.passed) == 8 and not report.skipped, str(report)


# ------------------------------------------------------------- train and eval


def trained(foreach=False, steps=25, **options):
    initial, targets = make_problem("cpu")
    params = [w.clone().requires_grad_() for w in initial]
    optimizer = ScheduleFreeAdamW(params, foreach=foreach, **{"lr": 0.05, **options})
    run(optimizer, params, targets, steps)
    return optimizer, params, targets


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def test_eval_mode_holds_x_and_train_mode_holds_y():
    optimizer, params, _ = trained(weight_decay=0.1, warmup_steps=4)
    assert optimizer.training
    beta1 = 0.9
    y = snapshot(params)
    z = [optimizer.state[p]["z"].clone() for p in params]
    x = [(yi - (1 - beta1) * zi) / beta1 for yi, zi in zip(y, z, strict=True)]
    assert not any(torch.allclose(xi, yi) for xi, yi in zip(x, y, strict=True))

    optimizer.eval()
    assert not optimizer.training
    assert [group["train_mode"] for group in optimizer.param_groups] == [False]
    for p, xi in zip(params, x, strict=True):
        torch.testing.assert_close(p.detach(), xi, rtol=1e-14, atol=1e-15)
    held_x = snapshot(params)
    optimizer.eval()  # already in eval mode: nothing moves
    assert all(torch.equal(p.detach(), xi) for p, xi in zip(params, held_x, strict=True))

    optimizer.train()
    assert optimizer.training
    for p, yi in zip(params, y, strict=True):
        torch.testing.assert_close(p.detach(), yi, rtol=1e-14, atol=1e-15)
    held_y = snapshot(params)
    optimizer.train()
    assert all(torch.equal(p.detach(), yi) for p, yi in zip(params, held_y, strict=True))
    # z never moves when the mode changes.
    assert all(torch.equal(optimizer.state[p]["z"], zi) for p, zi in zip(params, z, strict=True))


@pytest.mark.parametrize("start", ["train", "eval"])
def test_toggling_twice_is_the_identity(start):
    optimizer, params, _ = trained()
    if start == "eval":
        optimizer.eval()
    first, second = ("eval", "train") if start == "train" else ("train", "eval")
    before = snapshot(params)
    for _ in range(5):
        getattr(optimizer, first)()
        getattr(optimizer, second)()
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=1e-14, atol=1e-15)


def test_a_step_in_eval_mode_raises_and_changes_nothing():
    optimizer, params, targets = trained(warmup_steps=3)
    optimizer.eval()
    for p, g in zip(params, gradient_at([p.detach() for p in params], targets, 26), strict=True):
        p.grad = g
    values, grads = snapshot(params), snapshot(p.grad for p in params)
    state = copy.deepcopy(optimizer.state_dict())
    calls = []

    def closure():
        calls.append(True)
        optimizer.zero_grad()
        return torch.tensor(0.0)

    for call in (optimizer.step, lambda: optimizer.step(closure)):
        with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
            call()
    assert not calls, "the closure ran although the step was refused"
    assert all(torch.equal(p.detach(), v) for p, v in zip(params, values, strict=True))
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    after = optimizer.state_dict()
    assert after["param_groups"] == state["param_groups"]
    for key, entry in state["state"].items():
        for name, value in entry.items():
            assert torch.equal(after["state"][key][name], value)
    optimizer.train()
    optimizer.step()  # allowed again
    assert optimizer.param_groups[0]["k"] == 26


def test_a_group_added_in_eval_mode_starts_in_eval_mode():
    optimizer, _, _ = trained()
    optimizer.eval()
    extra = torch.ones(3, dtype=torch.float64, requires_grad=True)
    optimizer.add_param_group({"params": [extra], "lr": 0.1})
    group = optimizer.param_groups[1]
    assert (group["train_mode"], group["k"], group["weight_sum"]) == (False, 0, 0.0)
    assert not optimizer.training
    optimizer.train()
    assert all(group["train_mode"] for group in optimizer.param_groups)
    assert torch.equal(extra.detach(), torch.ones(3, dtype=torch.float64))  # no state: x = y


# -------------------------------------------------------------- foreach, dtypes


def mixed_params(device):
    generator = torch.Generator().manual_seed(3)

    def draw(*shape, dtype=torch.float64):
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    return [
        draw(4, 3).requires_grad_(),
        draw(()).requires_grad_(),
        draw(5, 4).t().requires_grad_(),  # non-contiguous
        draw(6, dtype=torch.float32).requires_grad_(),  # a second foreach bucket
        draw(3, dtype=torch.complex128).requires_grad_(),
        draw(2).requires_grad_(),  # never gets a gradient
    ]


def run_mixed(foreach, device):
    params = mixed_params(device)
    optimizer = ScheduleFreeAdamW(
        [
            {"params": params[:3], "weight_decay": 0.2},
            {"params": params[3:], "lr": 0.01, "betas": (0.7, 0.99), "warmup_steps": 5},
        ],
        lr=0.05,
        warmup_steps=3,
        foreach=foreach,
    )
    for step in range(30):
        if step in (10, 20):  # evaluate now and then, as training does
            optimizer.eval()
            optimizer.train()
        for p in params[:-1]:
            p.grad = torch.sin(3 * p.detach()) + p.detach() ** 2 / 2
        optimizer.step()
    optimizer.eval()
    return params, optimizer


def test_foreach_equals_the_for_loop(device):
    loop_params, loop = run_mixed(False, device)
    fast_params, fast = run_mixed(True, device)
    exact = device.type == "cpu"
    for a, b in zip(loop_params, fast_params, strict=True):
        if exact:
            assert torch.equal(a.detach(), b.detach())
        else:
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)
    for a, b in zip(loop_params, fast_params, strict=True):
        for key in loop.state.get(a, {}):
            torch.testing.assert_close(
                loop.state[a][key], fast.state[b][key], rtol=0 if exact else 1e-12, atol=0
            )
    assert loop_params[-1] not in loop.state  # the parameter without a gradient has no state
    assert loop.state[loop_params[2]]["z"].stride() == loop_params[2].stride()


def test_a_complex_parameter_is_a_pair_of_real_coordinates():
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(4, generator=generator, dtype=torch.complex128)
    complex_param = start.clone().requires_grad_()
    real_param = torch.view_as_real(start).clone().requires_grad_()
    optimizers = [
        ScheduleFreeAdamW([p], lr=0.05, weight_decay=0.1, warmup_steps=2)
        for p in (complex_param, real_param)
    ]
    for _ in range(15):
        complex_param.grad = complex_param.detach() * (1 + 2j) + 0.5
        real_param.grad = torch.view_as_real(
            torch.view_as_complex(real_param.detach()) * (1 + 2j) + 0.5
        )
        for optimizer in optimizers:
            optimizer.step()
    for optimizer in optimizers:
        optimizer.eval()
    assert torch.equal(torch.view_as_real(complex_param.detach()), real_param.detach())


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_checkpoint_restores_the_mode_and_continues_identically(mode, foreach):
    optimizer, params, targets = trained(
        foreach=foreach, steps=12, weight_decay=0.1, warmup_steps=20
    )
    if mode == "eval":
        optimizer.eval()  # as one saves a model: at x
    buffer = io.BytesIO()
    torch.save({"model": snapshot(params), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed_params = [w.clone().requires_grad_() for w in checkpoint["model"]]
    resumed = ScheduleFreeAdamW(resumed_params, lr=0.05, foreach=foreach)
    assert resumed.training
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.training == (mode == "train")
    assert resumed.param_groups[0]["warmup_steps"] == 20

    for optimizer_, params_ in ((optimizer, params), (resumed, resumed_params)):
        optimizer_.train()
        run(optimizer_, params_, targets, 15)
        optimizer_.eval()
    assert all(
        torch.equal(a.detach(), b.detach()) for a, b in zip(params, resumed_params, strict=True)
    )
    for a, b in zip(params, resumed_params, strict=True):
        for key in ("z", "exp_avg_sq"):
            assert torch.equal(optimizer.state[a][key], resumed.state[b][key])
    assert resumed.param_groups[0]["k"] == optimizer.param_groups[0]["k"] == 27


def test_a_deep_copy_keeps_the_mode():
    optimizer, _, _ = trained()
    optimizer.eval()
    assert not copy.deepcopy(optimizer).training


# ------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"lr": -1.0}, ValueError, r"Invalid lr"),
        (
            {"betas": (0.0, 0.999)},
            ValueError,
            r"beta parameter at index 0: 0.0 \(must be in \(0, 1\)",
        ),
        ({"betas": (1.0, 0.999)}, ValueError, r"beta parameter at index 0"),
        ({"betas": (0.9, 1.0)}, ValueError, r"beta parameter at index 1"),
        ({"eps": -1e-8}, ValueError, r"Invalid eps"),
        ({"weight_decay": -0.1}, ValueError, r"Invalid weight_decay"),
        ({"warmup_steps": -1}, ValueError, r"Invalid warmup_steps"),
        ({"warmup_steps": 2.5}, TypeError, r"Invalid warmup_steps"),
        ({"r": -1.0}, ValueError, r"Invalid r value"),
        ({"weight_lr_power": -2.0}, ValueError, r"Invalid weight_lr_power"),
        ({"foreach": "yes"}, TypeError, r"Invalid foreach"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ScheduleFreeAdamW([torch.zeros(2, requires_grad=True)], **kwargs)


def test_sparse_gradients_are_refused_before_anything_changes():
    optimizer, params, _ = trained()
    before = copy.deepcopy(optimizer.state_dict()["param_groups"])
    params[1].grad = torch.ones(6, dtype=torch.float64).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()
    assert optimizer.state_dict()["param_groups"] == before


# -------------------------------------------------------------------- BatchNorm


def bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()


def bn_batches(count=6, seed=5):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 3, generator=generator, dtype=torch.float64) * 2 + 1,
            torch.randn(8, 1, generator=generator, dtype=torch.float64),
        )
        for _ in range(count)
    ]


def trained_bn_model():
    model = bn_model()
    optimizer = ScheduleFreeAdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    model.train()
    for inputs, targets in bn_batches(20, seed=9):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()
    return model, optimizer


def batch_statistics(weight, bias, batches):
    """The running statistics of the BatchNorm after Linear(weight, bias), computed by hand."""
    means, variances = [], []
    for inputs, _ in batches:
        hidden = inputs @ weight.T + bias
        means.append(hidden.mean(0))
        variances.append(hidden.var(0, unbiased=True))
    return torch.stack(means).mean(0), torch.stack(variances).mean(0)


def test_update_bn_recomputes_the_statistics_at_x():
    model, optimizer = trained_bn_model()
    linear, norm = model[0], model[1]
    beta1 = 0.9
    at_x = [
        (p.detach() - (1 - beta1) * optimizer.state[p]["z"]) / beta1
        for p in (linear.weight, linear.bias)
    ]
    batches = bn_batches()
    expected_mean, expected_var = batch_statistics(*at_x, batches)
    mean_at_y, _ = batch_statistics(linear.weight.detach(), linear.bias.detach(), batches)
    assert not torch.allclose(expected_mean, mean_at_y, rtol=1e-6)

    model.eval()
    update_bn(batches, model, optimizer=optimizer)
    assert not optimizer.training  # the helper put the parameters at x, and left them there
    torch.testing.assert_close(linear.weight.detach(), at_x[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(norm.running_mean, expected_mean, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(norm.running_var, expected_var, rtol=1e-12, atol=1e-13)
    assert int(norm.num_batches_tracked) == len(batches)
    assert norm.momentum == 0.1
    assert not any(module.training for module in model.modules())


def test_update_bn_without_optimizer_uses_the_parameters_as_they_are():
    model, optimizer = trained_bn_model()
    optimizer.eval()
    model.train()
    inputs_only = [inputs for inputs, _ in bn_batches()]
    update_bn(iter(inputs_only), model, "cpu")
    expected_mean, expected_var = batch_statistics(
        model[0].weight.detach(), model[0].bias.detach(), bn_batches()
    )
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(model[1].running_var, expected_var, rtol=1e-12, atol=1e-13)
    assert all(module.training for module in model.modules())


def test_update_bn_leaves_a_model_without_batch_norm_alone():
    model = torch.nn.Linear(3, 2)

    def never():
        raise AssertionError("update_bn iterated the loader of a model without BatchNorm")
        yield

    update_bn(never(), model)
