"""Adafactor beyond the generic suite: the factored state, the relative step, the buckets.

test_conformance.py already holds optimlib.adafactor.Adafactor to torch.optim.Adafactor
over many steps; here it is also held to a direct transcription of the
algorithm, and the properties that make Adafactor what it is are checked one
by one.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor

import optimlib.optimizer as optimizer_module
from optimlib.adafactor import Adafactor
from tests.library.optimizer_cases import ADAFACTOR_INFO, OptimizerInfo
from tests.library.test_conformance import STEPS, Scenario, assert_same_run, make

SHAPES = ((5, 3), (7,), (), (2, 3, 4))


def _draw(shapes, generator, dtype=torch.float64, device="cpu") -> list[Tensor]:
    return [torch.randn(s, generator=generator, dtype=dtype).to(device) for s in shapes]


def transcribed_adafactor(
    initial, gradients, *, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize=False
):
    """The algorithm as torch.optim.Adafactor documents it, in plain tensor arithmetic.

    The factored estimate is the outer product by broadcasting, means are taken
    of the squared gradient directly, and the RMS is a mean of squares: none of
    the norms, matrix products or in-place kernels the implementation uses.
    """
    theta = [t.clone() for t in initial]
    rows = [torch.zeros((*t.shape[:-1], 1), dtype=t.dtype) if t.dim() > 1 else None for t in theta]
    cols = [
        torch.zeros((*t.shape[:-2], 1, t.shape[-1]), dtype=t.dtype) if t.dim() > 1 else None
        for t in theta
    ]
    full = [torch.zeros_like(t) if t.dim() <= 1 else None for t in theta]
    for t, step_gradients in enumerate(gradients, start=1):
        for i, g in enumerate(step_gradients):
            g = -g if maximize else g
            beta2 = 1 - t**beta2_decay
            rho = min(lr, t**-0.5)
            alpha = max(eps2, theta[i].square().mean().sqrt().item()) * rho
            theta[i] = theta[i] * (1 - lr * weight_decay)
            if g.dim() > 1:
                rows[i] = beta2 * rows[i] + (1 - beta2) * (g * g).mean(dim=-1, keepdim=True)
                cols[i] = beta2 * cols[i] + (1 - beta2) * (g * g).mean(dim=-2, keepdim=True)
                overall = rows[i].mean(dim=-2, keepdim=True).clamp(min=eps1)
                estimate = rows[i] * cols[i] / overall
            else:
                full[i] = beta2 * full[i] + (1 - beta2) * g * g
                estimate = full[i]
            u = g / estimate.clamp(min=eps1**2).sqrt()
            u = u / max(1.0, u.square().mean().sqrt().item() / d)
            theta[i] = theta[i] - alpha * u
    return theta, rows, cols, full


TRANSCRIBED_OPTIONS = [
    {},
    {"lr": 0.5, "beta2_decay": -0.5},
    {"eps": (0.3, 2.0), "d": 3.0},
    {"lr": 0.05, "weight_decay": 0.2, "maximize": True},
]


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("options", TRANSCRIBED_OPTIONS, ids=str)
def test_matches_a_transcription_of_the_algorithm(options, foreach):
    generator = torch.Generator().manual_seed(0)
    initial = _draw(SHAPES, generator)
    gradients = [_draw(SHAPES, generator) for _ in range(30)]
    params = [t.clone().requires_grad_() for t in initial]
    optimizer = Adafactor(params, foreach=foreach, **options)
    for step_gradients in gradients:
        for p, g in zip(params, step_gradients, strict=True):
            p.grad = g.clone()
        optimizer.step()
    eps1, eps2 = options.get("eps", (None, 1e-3))
    theta, rows, cols, full = transcribed_adafactor(
        initial,
        gradients,
        lr=options.get("lr", 1e-2),
        beta2_decay=options.get("beta2_decay", -0.8),
        eps1=torch.finfo(torch.float64).eps if eps1 is None else eps1,
        eps2=eps2,
        d=options.get("d", 1.0),
        weight_decay=options.get("weight_decay", 0.0),
        maximize=options.get("maximize", False),
    )
    for i, param in enumerate(params):
        state = optimizer.state[param]
        torch.testing.assert_close(param.detach(), theta[i], rtol=1e-10, atol=1e-12)
        if param.dim() > 1:
            torch.testing.assert_close(state["row_var"], rows[i], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(state["col_var"], cols[i], rtol=1e-10, atol=1e-12)
        else:
            torch.testing.assert_close(state["variance"], full[i], rtol=1e-10, atol=1e-12)


def test_a_matrix_keeps_a_row_and_a_column_a_vector_its_full_second_moment():
    params = [torch.ones(s, requires_grad=True) for s in ((6, 4), (2, 5, 3), (7,), ())]
    optimizer = Adafactor(params)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    shapes = {
        index: {k: tuple(v.shape) for k, v in state.items()}
        for index, state in optimizer.state_dict()["state"].items()
    }
    assert shapes == {
        0: {"step": (), "row_var": (6, 1), "col_var": (1, 4)},
        1: {"step": (), "row_var": (2, 5, 1), "col_var": (2, 1, 3)},
        2: {"step": (), "variance": (7,)},
        3: {"step": (), "variance": ()},
    }
    reference = torch.optim.Adafactor([p.detach().clone().requires_grad_() for p in params])
    for p in reference.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    reference.step()
    assert [list(s) for s in shapes.values()] == [
        list(s) for s in reference.state_dict()["state"].values()
    ]
    # All-ones gradients, and 1 - beta2_1 = 1: the first row means are 1.
    torch.testing.assert_close(optimizer.state[params[0]]["row_var"], torch.ones(6, 1))


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state_dict()["state"].values()
        for value in state.values()
        if isinstance(value, Tensor)
    )


def test_a_matrix_state_grows_with_rows_plus_columns_not_their_product():
    sizes = {}
    for n, m in ((64, 32), (128, 32), (128, 64)):
        weight = torch.zeros(n, m, requires_grad=True)
        weight.grad = torch.ones(n, m)
        optimizer = Adafactor([weight])
        optimizer.step()
        sizes[n, m] = _state_bytes(optimizer)
    step_bytes = 4  # the float32 step count
    assert all(size == (n + m) * 4 + step_bytes for (n, m), size in sizes.items())


def test_the_step_is_relative_to_the_parameters_size_and_capped_by_lr():
    """One step on a vector: U is sign(g), so theta moves by max(eps2, RMS(theta)) * rho_t."""
    for scale in (1e-6, 1.0, 100.0):
        for lr, steps in ((0.01, 1), (1.0, 1), (1.0, 9)):
            weight = torch.full((4,), scale, dtype=torch.float64, requires_grad=True)
            optimizer = Adafactor([weight], lr=lr, eps=(None, 1e-3))
            optimizer.state[weight]["step"] = torch.tensor(float(steps - 1))
            optimizer.state[weight]["variance"] = torch.zeros(4, dtype=torch.float64)
            weight.grad = torch.tensor([1.0, -2.0, 3.0, -4.0], dtype=torch.float64)
            if steps > 1:  # a variance that the step's average leaves at g^2
                optimizer.state[weight]["variance"] = weight.grad.square()
            optimizer.step()
            rho = min(lr, steps**-0.5)
            signs = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
            expected = scale - max(1e-3, scale) * rho * signs
            torch.testing.assert_close(weight.detach(), expected, rtol=1e-14, atol=0)


def test_weight_decay_scales_by_lr_not_by_the_relative_step():
    weight = torch.full((3,), 2.0, dtype=torch.float64, requires_grad=True)
    optimizer = Adafactor([weight], lr=0.5, weight_decay=0.1)
    optimizer.state[weight]["step"] = torch.tensor(99.0)  # rho = min(0.5, 0.1)
    optimizer.state[weight]["variance"] = torch.zeros(3, dtype=torch.float64)
    weight.grad = torch.zeros(3, dtype=torch.float64)  # no update: only the decay moves it
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((3,), 2.0 * (1 - 0.5 * 0.1)).double())


def _spy(monkeypatch, name: str) -> list[list[Tensor]]:
    calls: list[list[Tensor]] = []
    original = getattr(Adafactor, name)

    @functools.wraps(original)
    def spy(params, *args, **kwargs):
        calls.append(list(params))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(Adafactor, name, staticmethod(spy))
    return calls


def test_foreach_buckets_keep_matrices_and_vectors_apart(monkeypatch):
    calls = _spy(monkeypatch, "foreach_update")
    generator = torch.Generator().manual_seed(0)
    params = [
        t.requires_grad_()
        for t in (
            *_draw(((4, 3), (5,), (2, 2, 2), ()), generator),
            *_draw(((3, 3), (2,)), generator, dtype=torch.float32),
        )
    ]
    optimizer = Adafactor(params, foreach=True)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    buckets = [[(tuple(p.shape), p.dtype) for p in bucket] for bucket in calls]
    f64, f32 = torch.float64, torch.float32
    assert buckets == [
        [((4, 3), f64), ((2, 2, 2), f64)],
        [((5,), f64), ((), f64)],
        [((3, 3), f32)],
        [((2,), f32)],
    ]


@pytest.mark.parametrize("automatic", ["as-on-this-device", "as-on-cuda"])
def test_foreach_none_runs_the_for_loop_on_every_device(monkeypatch, device, automatic):
    """torch.optim.Adafactor takes its foreach path only when foreach=True, even on CUDA.

    "as-on-cuda" makes the automatic choice pick foreach, as it does for the
    other optimizers on CUDA, so that a CPU-only machine checks this too.
    """
    if automatic == "as-on-cuda":
        monkeypatch.setattr(
            optimizer_module, "use_foreach", lambda foreach, params, grads: foreach in (None, True)
        )
    loops = _spy(monkeypatch, "for_loop_update")
    multis = _spy(monkeypatch, "foreach_update")
    for foreach, expected in ((None, (1, 0)), (False, (2, 0)), (True, (2, 2))):
        weights = [
            torch.ones(3, 2, device=device, requires_grad=True),
            torch.ones(2, device=device),
        ]
        weights[1].requires_grad_()
        optimizer = Adafactor(weights, foreach=foreach)
        for w in weights:
            w.grad = torch.ones_like(w)
        optimizer.step()
        assert (len(loops), len(multis)) == expected, foreach


@pytest.mark.parametrize("first", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_default_epsilon1_is_the_first_parameters_dtypes_as_in_torch(first, foreach):
    """eps=(None, ...): torch's for-loop takes finfo(dtype).eps of the group's first
    parameter with a gradient, and uses it for all. Tiny gradients make it matter:
    float32's 1.2e-7 clamps their square root, float64's 2.2e-16 does not."""
    second = torch.float64 if first is torch.float32 else torch.float32

    def run(cls, **extra) -> list[Tensor]:
        generator = torch.Generator().manual_seed(0)
        frozen = torch.ones(2, dtype=second, requires_grad=True)  # no gradient: not "first"
        params = [
            frozen,
            *(
                t.requires_grad_()
                for t in (
                    *_draw(((3, 2), (4,)), generator, dtype=first),
                    *_draw(((2, 3), (5,)), generator, dtype=second),
                )
            ),
        ]
        optimizer = cls(params, lr=0.5, **extra)
        for _ in range(3):
            for p in params[1:]:
                p.grad = 1e-9 * torch.randn(p.shape, generator=generator, dtype=p.dtype)
            optimizer.step()
        return [p.detach() for p in params]

    ours, theirs = run(Adafactor, foreach=foreach), run(torch.optim.Adafactor, foreach=False)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6 if foreach else 0, atol=0)
    own_eps = [run(Adafactor, foreach=foreach, eps=(torch.finfo(first).eps, 1e-3))]
    other_eps = run(Adafactor, foreach=foreach, eps=(torch.finfo(second).eps, 1e-3))
    assert all(torch.equal(a, b) for a, b in zip(ours, own_eps[0], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ours, other_eps, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_low_precision_matches_torch_bit_for_bit(dtype, foreach, device):
    runs = []
    for cls in (Adafactor, torch.optim.Adafactor):
        generator = torch.Generator().manual_seed(1)
        params = [t.requires_grad_() for t in _draw(SHAPES, generator, dtype, device)]
        optimizer = cls(params, lr=0.1, weight_decay=0.01, foreach=foreach)
        for _ in range(10):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator).to(dtype).to(device)
            optimizer.step()
        runs.append((params, optimizer.state_dict()["state"]))
    (ours, our_state), (theirs, their_state) = runs
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine.detach(), reference.detach(), rtol=0, atol=0)
    for index, state in our_state.items():
        for key, value in state.items():
            torch.testing.assert_close(value, their_state[index][key], rtol=0, atol=0)


def test_a_bad_group_stops_the_step_before_any_group_changes():
    """torch.optim.Adafactor would have updated the first group already."""
    good = torch.ones(2, 2, requires_grad=True)
    embedding = torch.nn.Embedding(3, 2, sparse=True)
    optimizer = Adafactor([{"params": [good]}, {"params": embedding.parameters(), "lr": 0.1}])
    good.grad = torch.ones(2, 2)
    embedding(torch.tensor([0])).sum().backward()
    with pytest.raises(RuntimeError, match="Adafactor does not support sparse gradients"):
        optimizer.step()
    assert torch.equal(good.detach(), torch.ones(2, 2)) and not optimizer.state


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("info", "config"), ADAFACTOR_INFO.config_params())
def test_each_path_equals_torchs_bit_for_bit_in_float64(info, config, foreach):
    """Stricter than the generic suite's rtol=1e-12: torch's own arithmetic, in its order.

    (optimlib's two paths differ from each other by rounding, as torch's do:
    the for-loop adds ``alpha * update`` in one kernel, foreach in two.)
    """
    ours, theirs = Scenario(torch.device("cpu")), Scenario(torch.device("cpu"))
    opt_ours = make(info, info.ours, ours, config, foreach=foreach)
    opt_theirs = make(info, info.theirs, theirs, config, foreach=foreach)
    ours.run(opt_ours, range(STEPS))
    theirs.run(opt_theirs, range(STEPS))
    exact = OptimizerInfo(info.ours, info.theirs, (), rtol=0, atol=0)
    assert_same_run(exact, ours, theirs, opt_ours, opt_theirs)
