"""optimlib.muon.Muon against torch.optim.Muon, and the Muon + AdamW split of a model.

torch's Muon takes 2-D parameters only, so the generic suite's scenario (0-d
and 1-D tensors among the parameters) does not apply; this file runs the
same kinds of checks on matrices: bit-for-bit parity over many steps, state
dicts both ways, weights-only checkpoints, deepcopy, and torch's errors.
"""

from __future__ import annotations

import copy
import inspect
import io
import re
from typing import Any

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

from optimlib.adam import AdamW
from optimlib.muon import (
    Muon,
    MuonAndAdamW,
    adjusted_lr,
    muon_and_adamw,
    orthogonalize,
    split_parameters,
)

STEPS = 60


pytestmark = pytest.mark.usefixtures("one_thread")


def _torch_adjusts_lr_by(name: str) -> bool:
    """torch 2.13's Muon lacks "spectral_unclamped"; where torch lacks it, it is no oracle."""
    try:
        torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)], adjust_lr_fn=name)
    except ValueError:
        return False
    return True


TORCH_HAS_SPECTRAL = _torch_adjusts_lr_by("spectral_unclamped")
NEEDS_SPECTRAL = pytest.mark.skipif(
    not TORCH_HAS_SPECTRAL, reason=f"torch {torch.__version__}'s Muon has no spectral_unclamped"
)

CONFIGS: list[Any] = [
    {},
    {"lr": 0.02},
    {"lr": 0.02, "nesterov": False},
    {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.0},
    {"lr": 0.01, "momentum": 0.0},
    {"lr": 0.01, "adjust_lr_fn": "original"},
    {"lr": 0.005, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01},
    pytest.param(
        {"lr": 0.01, "adjust_lr_fn": "spectral_unclamped", "nesterov": False},
        marks=NEEDS_SPECTRAL,
        id="lr=0.01,adjust_lr_fn=spectral_unclamped,nesterov=False",
    ),
    {"lr": 0.01, "ns_steps": 3, "eps": 1e-3, "ns_coefficients": (2.0, -1.5, 0.5)},
    {"lr": torch.tensor(0.01), "momentum": 0.9},
]


def describe(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


def clone(config: dict[str, Any]) -> dict[str, Any]:
    """Each optimizer its own tensor lr: a scheduler updates it in place."""
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in config.items()}


class Scenario:
    """Matrices in two groups: tall, wide, square, and a non-contiguous (transposed) one.

    Parameter 1 has no gradient on every fourth step and parameter 2 is frozen
    from step 30 on; the second group sets its own ``lr`` and ``momentum``.
    """

    SHAPES = ((5, 3), (3, 7), (4, 4))

    def __init__(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        generator = torch.Generator().manual_seed(0)

        def draw(shape):
            return torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)

        tensors = [draw(shape) for shape in self.SHAPES] + [draw((6, 2)).t()]
        self.params = [t.detach().requires_grad_() for t in tensors]
        assert not self.params[-1].is_contiguous()
        self.targets = [draw(tuple(p.shape)) for p in self.params]

    def groups(self) -> list[dict[str, Any]]:
        return [
            {"params": self.params[:2]},
            {"params": self.params[2:], "lr": 0.004, "momentum": 0.8},
        ]

    def compute_gradients(self, step: int) -> None:
        if step == 30:
            self.params[2].requires_grad_(False)
        for p in self.params:
            p.grad = None
        terms = [
            ((p - y) ** 2).sum() + torch.sin(3 * p).sum()
            for p, y in zip(self.params, self.targets, strict=True)
            if p.requires_grad
        ]
        torch.stack(terms).sum().backward()
        if step % 4 == 3:
            self.params[1].grad = None

    def run(self, optimizer: torch.optim.Optimizer, steps: range, scheduler=None) -> None:
        for step in steps:
            self.compute_gradients(step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

    def copy_values_from(self, other: Scenario) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.params, other.params, strict=True):
                mine.copy_(theirs)
                mine.requires_grad_(theirs.requires_grad)


def assert_same(first: Scenario, second: Scenario, opt_a, opt_b) -> None:
    """Parameters and momentum buffers bit for bit; the same state and group keys."""
    for a, b in zip(first.params, second.params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a["state"].keys() == state_b["state"].keys()
    for index, entry in state_a["state"].items():
        assert entry.keys() == state_b["state"][index].keys() == {"momentum_buffer"}
        torch.testing.assert_close(
            entry["momentum_buffer"], state_b["state"][index]["momentum_buffer"], rtol=0, atol=0
        )
    for group_a, group_b in zip(state_a["param_groups"], state_b["param_groups"], strict=True):
        assert group_a.keys() == group_b.keys()


# ------------------------------------------------------------------- parity


@pytest.mark.parametrize("config", CONFIGS, ids=describe)
def test_matches_torch_bit_for_bit_over_many_steps(config, device):
    ours, theirs = Scenario(device=device), Scenario(device=device)
    opt_ours = Muon(ours.groups(), **clone(config))
    opt_theirs = torch.optim.Muon(theirs.groups(), **clone(config))
    ours.run(opt_ours, range(STEPS))
    theirs.run(opt_theirs, range(STEPS))
    assert_same(ours, theirs, opt_ours, opt_theirs)
    start = Scenario(device=device).params
    moved = [not torch.equal(p, q) for p, q in zip(ours.params, start, strict=True)]
    assert all(moved), "a parameter never moved: the comparison would be empty"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", [{"lr": 0.02}, {"adjust_lr_fn": "match_rms_adamw"}], ids=str)
def test_matches_torch_bit_for_bit_in_lower_precision(config, dtype):
    ours, theirs = Scenario(dtype), Scenario(dtype)
    opt_ours, opt_theirs = (
        Muon(ours.groups(), **config),
        torch.optim.Muon(theirs.groups(), **config),
    )
    ours.run(opt_ours, range(20))
    theirs.run(opt_theirs, range(20))
    assert_same(ours, theirs, opt_ours, opt_theirs)


def test_bfloat16_without_nesterov_keeps_the_momentum_an_average_unlike_torch():
    """torch's ``grad.bfloat16()`` is the buffer itself there, which it then normalizes in place."""
    generator = torch.Generator().manual_seed(3)
    gradients = [torch.randn(4, 3, generator=generator).bfloat16() for _ in range(3)]
    buffers = {}
    for cls in (Muon, torch.optim.Muon):
        param = torch.zeros(4, 3, dtype=torch.bfloat16, requires_grad=True)
        optimizer = cls([param], nesterov=False, momentum=0.5)
        for gradient in gradients:
            param.grad = gradient.clone()
            optimizer.step()
        buffers[cls] = optimizer.state[param]["momentum_buffer"]
    average = torch.zeros(4, 3, dtype=torch.bfloat16)
    for gradient in gradients:
        average.lerp_(gradient, 0.5)
    torch.testing.assert_close(buffers[Muon], average, rtol=0, atol=0)
    assert not torch.allclose(buffers[torch.optim.Muon].float(), average.float(), atol=0.05)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    momentum=st.floats(0.0, 0.99),
    lr=st.floats(1e-4, 0.1),
    weight_decay=st.floats(0.0, 0.5),
    nesterov=st.booleans(),
    adjust_lr_fn=st.sampled_from(
        [None, "original", "match_rms_adamw"]
        + (["spectral_unclamped"] if TORCH_HAS_SPECTRAL else [])
    ),
    ns_steps=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_and_hyperparameters_match_torch(
    rows, cols, momentum, lr, weight_decay, nesterov, adjust_lr_fn, ns_steps, seed
):
    options = {
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "nesterov": nesterov,
        "adjust_lr_fn": adjust_lr_fn,
        "ns_steps": ns_steps,
    }
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    gradients = [
        torch.randn(rows, cols, generator=generator, dtype=torch.float64) for _ in range(6)
    ]
    results = []
    for cls in (Muon, torch.optim.Muon):
        param = start.clone().requires_grad_()
        optimizer = cls([param], **options)
        for gradient in gradients:
            param.grad = gradient.clone()
            optimizer.step()
        results.append((param.detach(), optimizer.state[param]["momentum_buffer"]))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_works_under_a_torch_lr_scheduler():
    runs = []
    for cls in (Muon, torch.optim.Muon):
        scenario = Scenario()
        optimizer = cls(scenario.groups(), lr=0.02)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
        scenario.run(optimizer, range(30), scheduler=scheduler)
        runs.append((scenario, optimizer))
    assert_same(runs[0][0], runs[1][0], runs[0][1], runs[1][1])


def test_closure_runs_with_gradients_enabled_and_its_loss_is_returned():
    scenario = Scenario()
    optimizer = Muon(scenario.groups())
    calls = []

    def closure() -> Tensor:
        calls.append(torch.is_grad_enabled())
        scenario.compute_gradients(0)
        return torch.tensor(1.5)

    with torch.no_grad():
        assert optimizer.step(closure) == 1.5
    assert calls == [True]


# ------------------------------------------------------- the pieces, alone


def test_orthogonalize_brings_every_singular_value_near_one():
    generator = torch.Generator().manual_seed(1)
    # Singular values spread over three decades.
    left, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))
    spread = torch.diag(torch.tensor([30.0, 3.0, 1.0, 0.3, 0.1], dtype=torch.float64))
    matrix = left[:, :5] @ spread @ right.T
    before = matrix.clone()
    result = orthogonalize(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert result.dtype == torch.bfloat16 and result.shape == (8, 5)
    singular = torch.linalg.svdvals(result.double())
    assert singular.min() > 0.6 and singular.max() < 1.3, singular
    assert torch.equal(matrix, before), "the input was changed"
    # The singular vectors are kept: the result is close to U V^T.
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert torch.linalg.matrix_norm(result.double() - u @ vh, ord=2) < 0.35


def test_a_tall_matrix_is_iterated_as_its_transpose():
    matrix = torch.randn(7, 3, generator=torch.Generator().manual_seed(2))
    coefficients = (3.4445, -4.7750, 2.0315)
    tall = orthogonalize(matrix, coefficients, 5, 1e-7)
    wide = orthogonalize(matrix.T, coefficients, 5, 1e-7)
    assert torch.equal(tall, wide.T)


def test_orthogonalize_leaves_a_bfloat16_input_unchanged():
    matrix = torch.randn(3, 4, generator=torch.Generator().manual_seed(4)).bfloat16()
    before = matrix.clone()
    orthogonalize(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert torch.equal(matrix, before)


@pytest.mark.parametrize(
    ("adjust_lr_fn", "shape", "ratio"),
    [
        (None, (8, 2), 2.0),
        (None, (2, 8), 1.0),
        ("original", (9, 4), 1.5),
        ("match_rms_adamw", (16, 4), 0.2 * 4),
        ("match_rms_adamw", (4, 25), 0.2 * 5),
        ("spectral_unclamped", (2, 8), 0.5),
        ("spectral_unclamped", (9, 4), 1.5),
    ],
)
def test_adjusted_lr_scales_as_torch_names_it(adjust_lr_fn, shape, ratio):
    assert adjusted_lr(0.1, adjust_lr_fn, shape) == pytest.approx(0.1 * ratio, rel=1e-15)
    if adjust_lr_fn == "spectral_unclamped" and not TORCH_HAS_SPECTRAL:
        return  # the hand-computed ratio above is the check where torch lacks the rule
    assert adjusted_lr(0.1, adjust_lr_fn, shape) == torch.optim._muon._adjust_lr(
        0.1, adjust_lr_fn, torch.Size(shape)
    )


# ----------------------------------------------------------- convolutions


def test_a_flattened_kernel_steps_as_the_matrix_it_flattens_to():
    generator = torch.Generator().manual_seed(5)
    kernel = torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64)
    gradients = [
        torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64) for _ in range(8)
    ]
    as_kernel = kernel.clone().requires_grad_()
    as_matrix = kernel.reshape(4, 18).clone().requires_grad_()
    options = {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}
    flattened = Muon([{"params": [as_kernel], "flatten": True}], **options)
    reference = torch.optim.Muon([as_matrix], **options)
    for gradient in gradients:
        as_kernel.grad, as_matrix.grad = gradient.clone(), gradient.reshape(4, 18).clone()
        flattened.step()
        reference.step()
    torch.testing.assert_close(
        as_kernel.detach().reshape(4, 18), as_matrix.detach(), rtol=0, atol=0
    )
    assert flattened.state[as_kernel]["momentum_buffer"].shape == (4, 2, 3, 3)


def test_kernels_need_a_flatten_group_and_vectors_are_refused_even_there():
    kernel = torch.zeros(4, 2, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match=re.escape("Muon only supports 2D parameters")):
        Muon([kernel])
    with pytest.raises(ValueError, match="flatten=True needs parameters of at least 2"):
        Muon([{"params": [torch.zeros(3, requires_grad=True)], "flatten": True}])


# ------------------------------------------------------- state and copies


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours", "ours->ours"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[-1]], ids=describe)
def test_state_dict_loads_both_ways_and_continues_identically(config, direction):
    source, target = {
        "ours->torch": (Muon, torch.optim.Muon),
        "torch->ours": (torch.optim.Muon, Muon),
        "ours->ours": (Muon, Muon),
    }[direction]
    uninterrupted = Scenario()
    optimizer = source(uninterrupted.groups(), **clone(config))
    uninterrupted.run(optimizer, range(STEPS // 2))
    resumed = Scenario()
    resumed.copy_values_from(uninterrupted)
    restored = target(resumed.groups(), **clone(config))
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same(uninterrupted, resumed, optimizer, restored)


def test_checkpoint_survives_torch_save_and_a_weights_only_load():
    uninterrupted = Scenario()
    optimizer = Muon(uninterrupted.groups(), lr=torch.tensor(0.01))
    uninterrupted.run(optimizer, range(STEPS // 2))
    buffer = io.BytesIO()
    torch.save(
        {"params": [p.detach() for p in uninterrupted.params], "opt": optimizer.state_dict()},
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = Scenario()
    with torch.no_grad():
        for param, saved in zip(resumed.params, checkpoint["params"], strict=True):
            param.copy_(saved)
    resumed.params[2].requires_grad_(False)
    restored = Muon(resumed.groups(), lr=torch.tensor(0.01))
    restored.load_state_dict(checkpoint["opt"])
    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same(uninterrupted, resumed, optimizer, restored)


def test_a_flatten_group_survives_a_state_dict_round_trip():
    kernel = torch.ones(4, 2, 3, requires_grad=True)
    optimizer = Muon([{"params": [kernel], "flatten": True}])
    kernel.grad = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(6))
    optimizer.step()
    restored = Muon([{"params": [kernel], "flatten": True}])
    restored.load_state_dict(torch.load(_saved(optimizer.state_dict()), weights_only=True))
    assert restored.param_groups[0]["flatten"] is True
    restored.step()  # a 3-D parameter: refused unless the group kept flatten=True


def _saved(state: dict[str, Any]) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_deepcopy_is_an_independent_equal_optimizer():
    original = Scenario()
    optimizer = Muon(original.groups(), lr=0.02)
    original.run(optimizer, range(10))
    clone_ = copy.deepcopy(optimizer)
    twin = Scenario()
    twin.params = [p for group in clone_.param_groups for p in group["params"]]
    assert all(a is not b for a, b in zip(original.params, twin.params, strict=True))
    original.run(optimizer, range(10, 20))
    twin.run(clone_, range(10, 20))
    assert_same(original, twin, optimizer, clone_)


def test_signature_defaults_and_group_keys_match_torch():
    ours, theirs = inspect.signature(Muon), inspect.signature(torch.optim.Muon)
    assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == [
        (p.name, p.default, p.kind) for p in theirs.parameters.values()
    ]
    scenario = Scenario()
    mine, torchs = Muon(scenario.groups()), torch.optim.Muon(scenario.groups())
    assert mine.defaults == torchs.defaults
    for group_ours, group_theirs in zip(mine.param_groups, torchs.param_groups, strict=True):
        assert group_ours.keys() == group_theirs.keys()
        assert {k: v for k, v in group_ours.items() if k != "params"} == {
            k: v for k, v in group_theirs.items() if k != "params"
        }


# ------------------------------------------------------------- bad input


def _torch_error(build) -> Exception:
    with pytest.raises(Exception) as refusal:
        build(torch.optim.Muon)
    return refusal.value


@pytest.mark.parametrize(
    ("params", "kwargs"),
    [
        ([torch.zeros(2, 2)], {"lr": -0.1}),
        ([torch.zeros(2, 2)], {"lr": float("nan")}),
        ([torch.zeros(2, 2)], {"lr": torch.tensor([0.1, 0.2])}),
        ([torch.zeros(2, 2)], {"momentum": -0.9}),
        ([torch.zeros(2, 2)], {"weight_decay": -1e-4}),
        ([torch.zeros(2, 2)], {"adjust_lr_fn": "sqrt"}),
        ([torch.zeros(2, 2), torch.zeros(3)], {}),
        ([torch.zeros(2, 2), torch.zeros(2, 2, 2)], {}),
        ([{"params": [torch.zeros(2, 2)]}, {"params": [torch.zeros(4)]}], {}),
    ],
    ids=str,
)
def test_construction_refuses_what_torch_refuses_in_its_words(params, kwargs):
    def build(cls):
        return cls([p if isinstance(p, dict) else p.requires_grad_() for p in params], **kwargs)

    theirs = _torch_error(build)
    with pytest.raises(type(theirs)) as ours:
        build(Muon)
    assert str(theirs) in str(ours.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"nesterov": "False"}, TypeError, r"Invalid nesterov: 'False'"),
        ({"eps": -1e-7}, ValueError, r"Invalid eps value: -1e-07"),
        ({"lr": "fast"}, TypeError, r"Invalid lr: expected a number, got str"),
        ({"momentum": None}, TypeError, r"Invalid momentum: expected a number"),
    ],
)
def test_construction_is_stricter_where_torch_would_compute_nonsense(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        Muon([torch.zeros(2, 2, requires_grad=True)], **kwargs)


def _two_groups_then_step(cls, second_group, **kwargs):
    """A healthy first group and a bad second one; returns what the step raised and left."""
    first = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    first.grad = torch.full((3, 2), 0.5, dtype=torch.float64)
    optimizer = cls([first], **kwargs)
    optimizer.add_param_group(second_group)
    for p in second_group["params"]:
        p.grad = torch.ones_like(p)
    with pytest.raises(Exception) as refusal:
        optimizer.step()
    return refusal.value, first, optimizer


@pytest.mark.parametrize(
    "second_group",
    [
        lambda: {"params": [torch.zeros(2, 2, dtype=torch.complex128, requires_grad=True)]},
        lambda: {"params": [torch.zeros(2, 2, requires_grad=True)], "ns_steps": 100},
        lambda: {"params": [torch.zeros(2, 2, requires_grad=True)], "ns_coefficients": (1, 2)},
    ],
    ids=["complex", "ns_steps=100", "two-coefficients"],
)
def test_step_refuses_with_torchs_error_before_anything_changes(second_group):
    theirs, *_ = _two_groups_then_step(torch.optim.Muon, second_group())
    ours, first, optimizer = _two_groups_then_step(Muon, second_group())
    assert type(ours) is type(theirs) and str(ours) == str(theirs)
    assert torch.equal(first.detach(), torch.ones(3, 2, dtype=torch.float64))
    assert len(optimizer.state) == 0


def test_a_sparse_gradient_is_refused_with_torchs_error():
    def attempt(cls):
        embedding = nn.Embedding(4, 2, sparse=True)
        optimizer = cls(embedding.parameters())
        embedding(torch.tensor([1, 2])).sum().backward()
        with pytest.raises(RuntimeError) as refusal:
            optimizer.step()
        return str(refusal.value), optimizer

    ours, optimizer = attempt(Muon)
    assert ours == attempt(torch.optim.Muon)[0] == "Muon does not support sparse gradients"
    assert len(optimizer.state) == 0


def test_a_non_matrix_added_later_is_refused_at_once_and_not_kept():
    optimizer = Muon([torch.zeros(2, 2, requires_grad=True)])
    with pytest.raises(ValueError, match=re.escape("Muon only supports 2D parameters")):
        optimizer.add_param_group({"params": [torch.zeros(3, requires_grad=True)]})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize(
    ("option", "value", "error", "pattern"),
    [
        (
            "adjust_lr_fn",
            "sqrt",
            ValueError,
            r"Adjust learning rate function sqrt is not supported",
        ),
        ("ns_steps", 2.5, TypeError, r"Invalid ns_steps value: 2\.5"),
        ("ns_steps", -1, ValueError, r"Invalid ns_steps value: -1"),
        ("ns_coefficients", 3.0, TypeError, r"Invalid ns_coefficients"),
    ],
)
def test_an_option_changed_after_construction_is_checked_at_the_step(option, value, error, pattern):
    param = torch.ones(2, 3, requires_grad=True)
    optimizer = Muon([param])
    optimizer.param_groups[0][option] = value
    param.grad = torch.ones(2, 3)
    with pytest.raises(error, match=pattern):
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(2, 3)) and len(optimizer.state) == 0


def test_muon_has_no_foreach_option_as_torch_has_none():
    for cls in (Muon, torch.optim.Muon):
        with pytest.raises(TypeError, match="foreach"):
            cls([torch.zeros(2, 2, requires_grad=True)], foreach=True)


# ------------------------------------------------------ Muon with AdamW


class TinyLanguageModel(nn.Module):
    """An embedding, a convolution, two hidden layers with biases, a norm and a head."""

    def __init__(self, tied: bool = False):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.position = nn.Parameter(torch.zeros(5, 6))
        self.hidden = nn.Linear(6, 8)
        self.mix = nn.Linear(8, 6, bias=False)
        self.norm = nn.LayerNorm(6)
        self.lm_head = nn.Linear(6, 11, bias=False)
        if tied:
            self.lm_head.weight = self.embed.weight

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.position
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = x + self.mix(torch.tanh(self.hidden(x)))
        return self.lm_head(self.norm(x))


def names(pairs) -> list[str]:
    return [name for name, _ in pairs]


def test_split_sends_hidden_matrices_to_muon_and_the_rest_to_adamw():
    split = split_parameters(TinyLanguageModel())
    assert names(split.matrices) == ["position", "hidden.weight", "mix.weight"]
    assert names(split.kernels) == []
    assert names(split.others) == [
        "embed.weight",
        "conv.weight",
        "conv.bias",
        "hidden.bias",
        "norm.weight",
        "norm.bias",
        "lm_head.weight",
    ]


def test_split_options_flatten_convolutions_head_and_exclude():
    model = TinyLanguageModel()
    split = split_parameters(model, flatten_convolutions=True, exclude=["position"])
    assert names(split.matrices) == ["hidden.weight", "mix.weight"]
    assert names(split.kernels) == ["conv.weight"]
    assert "position" in names(split.others) and "lm_head.weight" in names(split.others)
    no_head = split_parameters(model, head=None)
    assert names(no_head.matrices)[-1] == "lm_head.weight"
    named = split_parameters(model, head="mix")
    assert "mix.weight" in names(named.others) and "lm_head.weight" in names(named.matrices)
    assert names(split_parameters(model, head=model.mix).others) == names(named.others)
    with pytest.raises(ValueError, match=r"does not have: \['nowhere'\]"):
        split_parameters(model, exclude=["nowhere"])


def test_a_head_tied_to_the_embedding_goes_to_adamw_once():
    split = split_parameters(TinyLanguageModel(tied=True), head=None)
    assert names(split.others).count("embed.weight") == 1
    assert "lm_head.weight" not in names(split.matrices + split.others)  # the same tensor


@pytest.mark.parametrize("flatten_convolutions", [False, True])
def test_muon_and_adamw_builds_the_pair_with_the_groups_named(flatten_convolutions):
    model = TinyLanguageModel()
    pair = muon_and_adamw(
        model,
        muon_kwargs={"lr": 0.02},
        adamw_kwargs={"lr": 3e-3, "weight_decay": 0.01},
        flatten_convolutions=flatten_convolutions,
    )
    assert isinstance(pair, MuonAndAdamW)
    assert isinstance(pair.muon, Muon) and isinstance(pair.adamw, AdamW)
    muon_groups = pair.muon.param_groups
    assert muon_groups[0]["param_names"] == ["position", "hidden.weight", "mix.weight"]
    assert muon_groups[0]["lr"] == 0.02 and "flatten" not in muon_groups[0]
    if flatten_convolutions:
        assert muon_groups[1]["param_names"] == ["conv.weight"] and muon_groups[1]["flatten"]
    assert len(muon_groups) == 1 + flatten_convolutions
    assert pair.adamw.param_groups[0]["lr"] == 3e-3
    everything = {id(p) for p in model.parameters()}
    muon_ids = {id(p) for g in muon_groups for p in g["params"]}
    adamw_ids = {id(p) for p in pair.adamw.param_groups[0]["params"]}
    assert muon_ids | adamw_ids == everything and not muon_ids & adamw_ids


def test_muon_and_adamw_can_exempt_adamws_biases_norms_and_embeddings_from_decay():
    model = TinyLanguageModel()
    pair = muon_and_adamw(
        model,
        flatten_convolutions=True,
        adamw_kwargs={"weight_decay": 0.05},
        exempt_from_decay=True,
    )
    decayed, exempt = pair.adamw.param_groups
    assert decayed["param_names"] == ["lm_head.weight"] and decayed["weight_decay"] == 0.05
    assert exempt["weight_decay"] == 0.0
    assert sorted(exempt["param_names"]) == sorted(
        ["embed.weight", "conv.bias", "hidden.bias", "norm.weight", "norm.bias"]
    )
    default = muon_and_adamw(TinyLanguageModel(), adamw_kwargs={"weight_decay": 0.05})
    assert [g["weight_decay"] for g in default.adamw.param_groups] == [0.05]
    tied = muon_and_adamw(TinyLanguageModel(tied=True), head=None, exempt_from_decay=True)
    assert [g["param_names"] for g in tied.adamw.param_groups] == [
        ["conv.weight"],  # not flattened for Muon, so AdamW's, and a weight
        ["embed.weight", "conv.bias", "hidden.bias", "norm.weight", "norm.bias"],  # tied head
    ]
    with pytest.raises(TypeError, match="Invalid exempt_from_decay"):
        muon_and_adamw(model, exempt_from_decay="yes")


def test_muon_and_adamw_trains_as_torchs_muon_and_adamw_do():
    tokens = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(7))
    runs = []
    for library in ("optimlib", "torch"):
        torch.manual_seed(0)
        model = TinyLanguageModel().double()
        if library == "optimlib":
            pair: Any = muon_and_adamw(model, muon_kwargs={"lr": 0.02}, adamw_kwargs={"lr": 3e-3})
        else:
            split = split_parameters(model)
            pair = MuonAndAdamW(
                torch.optim.Muon([p for _, p in split.matrices], lr=0.02),
                torch.optim.AdamW([p for _, p in split.others], lr=3e-3),
            )
        losses = []
        for _ in range(8):
            pair.zero_grad()
            logits = model(tokens)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 11), tokens.reshape(-1))
            loss.backward()
            pair.step()
            losses.append(loss.item())
        runs.append(([p.detach().clone() for p in model.parameters()], losses))
    (ours, our_losses), (theirs, their_losses) = runs
    assert our_losses == their_losses and our_losses[-1] < our_losses[0]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_muon_and_adamw_refuses_a_model_one_of_them_would_get_nothing_of():
    with pytest.raises(ValueError, match="no hidden weight matrix for Muon"):
        muon_and_adamw(nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="no parameter for AdamW"):
        muon_and_adamw(nn.Sequential(nn.Linear(3, 4, bias=False)), head=None)
