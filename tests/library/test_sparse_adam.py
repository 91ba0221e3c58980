"""SparseAdam against torch.optim.SparseAdam, on dense tables with sparse gradients.

The generic suite (test_conformance.py) feeds dense gradients, which SparseAdam
refuses; its checks are made here on a scenario of its own: tables looked up
by embedding, some rows twice in a batch, some rows never.
"""

from __future__ import annotations

import copy
import io
import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from optimlib.sparse_adam import SparseAdam

STEPS = 40

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


class Tables:
    """Dense parameters with sparse gradients, in two groups, over a run.

    - a (30, 5) table of which rows 24 to 29 are never looked up, and whose
      gradient is empty (no entries at all) on every seventh step;
    - a vector whose gradient lists single entries (a 1-d sparse gradient);
    - a 0-d parameter (a sparse gradient with no sparse dimension), without
      a gradient on every fifth step;
    - a non-contiguous (20, 5) table;
    - each batch looks two rows up twice, so the gradient lists them twice
      and SparseAdam must sum them (coalesce) before its non-linear update.
    """

    TOUCHED_ROWS = 24

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)

        def draw(*shape: int) -> Tensor:
            return torch.randn(shape, generator=generator, dtype=torch.float64)

        tensors = [draw(30, 5), draw(12), draw(), draw(5, 20).t()]
        self.params = [t.to(device).requires_grad_() for t in tensors]
        assert not self.params[3].is_contiguous()
        self.targets = [draw(*p.shape).to(device) for p in self.params]
        self.batches = torch.Generator().manual_seed(seed + 1)
        self.device = device

    def groups(self, overrides: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"params": self.params[:2]}, {"params": self.params[2:], **overrides}]

    def rows(self, high: int, count: int) -> Tensor:
        rows = torch.randint(0, high, (count,), generator=self.batches)
        return torch.cat([rows, rows[:2]]).to(self.device)

    def compute_gradients(self, step: int) -> None:
        table, vector, scalar, strided = self.params
        for p in self.params:
            p.grad = None
        rows = self.rows(self.TOUCHED_ROWS, 6)
        strided_rows = self.rows(20, 4)
        loss = ((F.embedding(rows, table, sparse=True) - self.targets[0][rows]) ** 2).sum()
        loss = loss + torch.sin(3 * F.embedding(strided_rows, strided, sparse=True)).sum()
        loss.backward()
        entries = self.rows(12, 3)
        vector.grad = torch.sparse_coo_tensor(
            entries[None], torch.cos(2 * vector.detach()[entries]), vector.shape
        )
        if step % 5 != 4:
            scalar.grad = (2 * (scalar.detach() - self.targets[2])).to_sparse()
        if step % 7 == 6:
            table.grad = empty_sparse_gradient(table)

    def run(self, optimizer: torch.optim.Optimizer, steps: range) -> None:
        for step in steps:
            self.compute_gradients(step)
            optimizer.step()

    def copy_values_from(self, other: Tables) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.params, other.params, strict=True):
                mine.copy_(theirs)


def empty_sparse_gradient(param: Tensor) -> Tensor:
    indices = torch.empty(1, 0, dtype=torch.long, device=param.device)
    values = param.new_empty((0, *param.shape[1:]))
    return torch.sparse_coo_tensor(indices, values, param.shape)


CONFIGS = [
    {},
    {"lr": 0.01},
    {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-6},
    {"lr": 0.01, "maximize": True},
    {"lr": torch.tensor(0.01), "betas": (0.5, 0.9)},
]
GROUP_OVERRIDES = {"lr": 0.03, "betas": (0.7, 0.99), "eps": 1e-4}


def make(cls: type, tables: Tables, config: dict[str, Any]) -> torch.optim.Optimizer:
    options = {k: v.clone() if isinstance(v, Tensor) else v for k, v in config.items()}
    return cls(tables.groups(GROUP_OVERRIDES), **options)


def assert_same_run(first: Tables, second: Tables, opt_a, opt_b) -> None:
    """Parameters and state bit for bit; ``step`` a Python int in both."""
    for a, b in zip(first.params, second.params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index, per_param in state_a.items():
        assert per_param.keys() == state_b[index].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert type(per_param["step"]) is type(state_b[index]["step"]) is int
        assert per_param["step"] == state_b[index]["step"], f"state[{index}]['step']"
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(per_param[key], state_b[index][key], rtol=0, atol=0)
    groups_a, groups_b = opt_a.state_dict()["param_groups"], opt_b.state_dict()["param_groups"]
    assert [g.keys() for g in groups_a] == [g.keys() for g in groups_b]


def config_ids(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


# ------------------------------------------------------------------- parity


@pytest.mark.parametrize("config", CONFIGS, ids=config_ids)
def test_matches_torch_optim_over_many_steps(config, device):
    ours, theirs = Tables(device), Tables(device)
    opt_ours, opt_theirs = (
        make(SparseAdam, ours, config),
        make(torch.optim.SparseAdam, theirs, config),
    )
    ours.run(opt_ours, range(STEPS))
    theirs.run(opt_theirs, range(STEPS))
    assert_same_run(ours, theirs, opt_ours, opt_theirs)
    # The scalar skipped every fifth step, and the table's empty gradients still counted.
    assert opt_ours.state[ours.params[2]]["step"] == STEPS - STEPS // 5
    assert opt_ours.state[ours.params[0]]["step"] == STEPS


def test_rows_never_looked_up_keep_zero_moments_and_their_values():
    tables = Tables(torch.device("cpu"))
    start = tables.params[0].detach().clone()
    optimizer = SparseAdam(tables.groups({}), lr=0.01)
    tables.run(optimizer, range(STEPS))
    state = optimizer.state[tables.params[0]]
    never = slice(Tables.TOUCHED_ROWS, None)
    assert torch.count_nonzero(state["exp_avg"][never]) == 0
    assert torch.count_nonzero(state["exp_avg_sq"][never]) == 0
    assert torch.equal(tables.params[0].detach()[never], start[never])
    # ... while every row that was looked up moved and has moments.
    assert torch.all(state["exp_avg_sq"][: Tables.TOUCHED_ROWS].sum(dim=1) > 0)
    touched = slice(None, Tables.TOUCHED_ROWS)
    assert not torch.any(tables.params[0].detach()[touched] == start[touched])


def test_each_step_changes_only_the_rows_its_gradient_touches():
    """Unlike Adam, rows outside the batch keep their moments (Adam would decay them)."""
    table = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    optimizer = SparseAdam([table], lr=0.05)
    generator = torch.Generator().manual_seed(3)
    for _ in range(15):
        rows = torch.randint(0, 40, (8,), generator=generator)
        before = {"param": table.detach().clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            before[key] = optimizer.state[table][key].clone() if optimizer.state else None
        optimizer.zero_grad()
        F.embedding(rows, table, sparse=True).pow(3).sum().backward()
        optimizer.step()
        touched = torch.zeros(40, dtype=torch.bool)
        touched[rows] = True
        state = optimizer.state[table]
        after = {
            "param": table.detach(),
            "exp_avg": state["exp_avg"],
            "exp_avg_sq": state["exp_avg_sq"],
        }
        for name, now in after.items():
            earlier = before[name] if before[name] is not None else torch.zeros_like(now)
            changed = (now != earlier).any(dim=1)
            assert torch.equal(changed, touched), name


def test_duplicate_lookups_are_summed_before_the_update():
    """Looking row 2 up twice is one entry with the summed gradient, not two updates."""
    table = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    optimizer = SparseAdam([table], lr=0.1, betas=(0.5, 0.75))
    F.embedding(torch.tensor([2, 2, 1]), table, sparse=True).sum().backward()
    assert table.grad._nnz() == 3  # not coalesced: row 2 listed twice
    optimizer.step()
    state = optimizer.state[table]
    torch.testing.assert_close(state["exp_avg"][2], torch.full((2,), 0.5 * 2, dtype=torch.float64))
    torch.testing.assert_close(
        state["exp_avg_sq"][2], torch.full((2,), 0.25 * 4, dtype=torch.float64)
    )
    # First step: both bias-corrected moments equal g and g^2, so each entry moves by ~lr.
    torch.testing.assert_close(table.detach()[1:3], torch.full((2, 2), 0.9, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate")
def test_a_parameter_listed_twice_is_updated_twice_as_torch_does():
    runs = []
    for cls in (SparseAdam, torch.optim.SparseAdam):
        table = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(6, 2).requires_grad_()
        optimizer = cls([table, table], lr=0.1)
        for rows in ([0, 1, 1], [4], [1, 5]):
            optimizer.zero_grad()
            F.embedding(torch.tensor(rows), table, sparse=True).sin().sum().backward()
            optimizer.step()
        runs.append((table.detach(), optimizer.state[table]))
    (ours, state), (theirs, torch_state) = runs
    assert torch.equal(ours, theirs)
    assert state["step"] == torch_state["step"] == 6
    assert torch.equal(state["exp_avg_sq"], torch_state["exp_avg_sq"])


def test_step_calls_the_closure_and_returns_its_loss():
    table = torch.ones(5, 2, dtype=torch.float64, requires_grad=True)
    optimizer = SparseAdam([table], lr=0.1)
    calls = []

    def closure() -> Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = F.embedding(torch.tensor([3]), table, sparse=True).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 2.0
    assert calls == [1]
    torch.testing.assert_close(table.detach()[3], torch.full((2,), 0.9, dtype=torch.float64))
    assert torch.equal(table.detach()[:3], torch.ones(3, 2, dtype=torch.float64))


# ----------------------------------------------------------- state and copies


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours", "ours->ours"])
@pytest.mark.parametrize("config", [CONFIGS[2], CONFIGS[3]], ids=config_ids)
def test_state_dict_loads_both_ways_and_continues_identically(config, direction):
    source_cls, target_cls = {
        "ours->torch": (SparseAdam, torch.optim.SparseAdam),
        "torch->ours": (torch.optim.SparseAdam, SparseAdam),
        "ours->ours": (SparseAdam, SparseAdam),
    }[direction]
    uninterrupted = Tables(torch.device("cpu"))
    optimizer = make(source_cls, uninterrupted, config)
    uninterrupted.run(optimizer, range(STEPS // 2))
    resumed = Tables(torch.device("cpu"))
    resumed.copy_values_from(uninterrupted)
    resumed.batches.set_state(uninterrupted.batches.get_state())
    restored = make(target_cls, resumed, config)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same_run(uninterrupted, resumed, optimizer, restored)


def test_checkpoint_survives_torch_save_and_weights_only_load():
    uninterrupted = Tables(torch.device("cpu"))
    optimizer = make(SparseAdam, uninterrupted, CONFIGS[3])
    uninterrupted.run(optimizer, range(STEPS // 2))
    buffer = io.BytesIO()
    torch.save(
        {"params": [p.detach() for p in uninterrupted.params], "optimizer": optimizer.state_dict()},
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = Tables(torch.device("cpu"))
    with torch.no_grad():
        for param, saved in zip(resumed.params, checkpoint["params"], strict=True):
            param.copy_(saved)
    resumed.batches.set_state(uninterrupted.batches.get_state())
    restored = make(SparseAdam, resumed, CONFIGS[3])
    restored.load_state_dict(checkpoint["optimizer"])
    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same_run(uninterrupted, resumed, optimizer, restored)


def test_deepcopy_is_an_independent_equal_optimizer():
    original = Tables(torch.device("cpu"))
    optimizer = make(SparseAdam, original, CONFIGS[1])
    original.run(optimizer, range(10))
    clone = copy.deepcopy(optimizer)
    twin = Tables(torch.device("cpu"))
    twin.params = [p for group in clone.param_groups for p in group["params"]]
    twin.batches.set_state(original.batches.get_state())
    assert all(a is not b for a, b in zip(original.params, twin.params, strict=True))
    original.run(optimizer, range(10, 20))
    twin.run(clone, range(10, 20))
    assert_same_run(original, twin, optimizer, clone)
    twin.run(clone, range(20, 21))  # the copy moves on alone
    assert not torch.equal(twin.params[1], original.params[1])
    # ... and keeps SparseAdam's checks and its options, not torch's "differentiable".
    with pytest.raises(ValueError, match="does not support complex parameters"):
        clone.add_param_group({"params": [torch.ones(2, dtype=torch.cfloat, requires_grad=True)]})
    assert [g.keys() for g in clone.param_groups] == [g.keys() for g in optimizer.param_groups]


def test_defaults_and_group_keys_match_torch():
    table = torch.ones(3, 2, requires_grad=True)
    ours, theirs = SparseAdam([table]), torch.optim.SparseAdam([table])
    assert ours.defaults == theirs.defaults
    assert ours.param_groups[0].keys() == theirs.param_groups[0].keys()


# --------------------------------------------------------------- bad input


def _message(cls: type, *args: Any, **kwargs: Any) -> tuple[type[Exception], str]:
    with pytest.raises(Exception) as refusal:
        cls(*args, **kwargs)
    return refusal.type, str(refusal.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"lr": 0.0}, r"^Invalid learning rate: 0\.0 \(must be in \(0, inf\)\)$"),
        ({"lr": -1e-3}, r"^Invalid learning rate: -0\.001 "),
        ({"lr": float("nan")}, r"^Invalid learning rate: nan "),
        ({"lr": torch.tensor(-0.1)}, r"^Invalid learning rate: -0\.1000000014"),
        ({"lr": torch.tensor([0.1, 0.2])}, r"Tensor lr must be 1-element"),
        ({"eps": 0.0}, r"^Invalid epsilon value: 0\.0 \(must be in \(0, inf\)\)$"),
        ({"eps": -1e-8}, r"^Invalid epsilon value: -1e-08 "),
        (
            {"betas": (1.0, 0.999)},
            r"^Invalid beta parameter at index 0: 1\.0 \(must be in \[0, 1\)",
        ),
        ({"betas": (0.9, -0.5)}, r"^Invalid beta parameter at index 1: -0\.5 "),
    ],
    ids=str,
)
def test_bad_arguments_raise_torchs_error_in_torchs_words(kwargs, pattern):
    """torch's type, and its message followed by the allowed range."""
    table = torch.ones(3, 2, requires_grad=True)
    error, message = _message(SparseAdam, [table], **kwargs)
    torch_error, torch_message = _message(torch.optim.SparseAdam, [table], **kwargs)
    assert error is torch_error is ValueError
    assert re.search(pattern, message), message
    assert torch_message in message


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern", "torch_refuses"),
    [
        ({"lr": "fast"}, TypeError, r"Invalid lr: expected a number, got str", True),
        ({"lr": None}, TypeError, r"Invalid lr: expected a number, got NoneType", True),
        ({"eps": None}, TypeError, r"Invalid eps: expected a number", True),
        ({"betas": 0.9}, TypeError, r"Invalid betas: expected a pair", True),
        # torch takes these, and computes infinities, or reads "no" as on:
        (
            {"lr": float("inf")},
            ValueError,
            r"Invalid learning rate: inf \(must be in \(0, inf",
            False,
        ),
        ({"maximize": "no"}, TypeError, r"Invalid maximize: 'no' \(must be True or False\)", False),
    ],
    ids=str,
)
def test_other_bad_arguments_are_refused_naming_the_argument(kwargs, error, pattern, torch_refuses):
    table = torch.ones(3, 2, requires_grad=True)
    with pytest.raises(error, match=pattern):
        SparseAdam([table], **kwargs)
    if torch_refuses:
        with pytest.raises(error):
            torch.optim.SparseAdam([table], **kwargs)
    else:
        torch.optim.SparseAdam([table], **kwargs)


def test_sparse_and_complex_parameters_are_refused_in_torchs_words():
    dense = torch.ones(3, requires_grad=True)
    sparse = torch.ones(3).to_sparse().requires_grad_()
    complex_ = torch.ones(3, dtype=torch.complex128, requires_grad=True)
    more_dense = torch.ones(3, requires_grad=True)
    more_complex = torch.ones(3, dtype=torch.complex64, requires_grad=True)
    cases = [
        [dense, sparse],
        [complex_],
        # torch gathers every culprit, in every group, and names the sparse ones first.
        [{"params": [complex_, dense]}, {"params": [more_dense, sparse, more_complex]}],
    ]
    for params in cases:
        ours = _message(SparseAdam, params)
        assert ours == _message(torch.optim.SparseAdam, params)
        assert ours[0] is ValueError
    assert _message(SparseAdam, cases[2])[1] == (
        "Sparse params at indices [[1, 1]]: SparseAdam requires dense parameter tensors"
    )
    assert _message(SparseAdam, cases[1])[1] == (
        "Complex params at indices [[0, 0]]: SparseAdam does not support complex parameters"
    )


def test_a_complex_parameter_added_later_is_refused_and_not_added():
    """torch.optim checks only at construction, then updates it into nonsense."""
    optimizer = SparseAdam([torch.ones(3, requires_grad=True)])
    complex_ = torch.ones(2, dtype=torch.complex128, requires_grad=True)
    message = "Complex params at indices [[1, 1]]: SparseAdam does not support complex parameters"
    with pytest.raises(ValueError, match=re.escape(message)):
        optimizer.add_param_group({"params": [torch.ones(2, requires_grad=True), complex_]})
    assert len(optimizer.param_groups) == 1
    optimizer.add_param_group({"params": [torch.ones(2, requires_grad=True)], "lr": 0.5})
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["lr"] == 0.5


def test_a_dense_gradient_is_refused_before_anything_changes():
    """torch.optim raises the same error, but only after updating the groups before it."""
    outcomes = []
    for cls in (SparseAdam, torch.optim.SparseAdam):
        table = torch.ones(6, 2, dtype=torch.float64, requires_grad=True)
        other = torch.ones(6, 2, dtype=torch.float64, requires_grad=True)
        dense = torch.ones(3, dtype=torch.float64, requires_grad=True)
        optimizer = cls([{"params": [table]}, {"params": [other, dense]}], lr=0.1)
        F.embedding(torch.tensor([1, 4]), table, sparse=True).sum().backward()
        F.embedding(torch.tensor([0]), other, sparse=True).sum().backward()
        optimizer.step()  # a first step, so that there is state to keep
        saved = copy.deepcopy(optimizer.state_dict())
        values = [table.detach().clone(), other.detach().clone()]
        dense.grad = torch.ones(3, dtype=torch.float64)
        with pytest.raises(RuntimeError) as refusal:
            optimizer.step()
        unchanged = torch.equal(table, values[0]) and torch.equal(other, values[1])
        state = optimizer.state_dict()["state"]
        unchanged = unchanged and all(
            state[i]["step"] == saved["state"][i]["step"]
            and torch.equal(state[i]["exp_avg"], saved["state"][i]["exp_avg"])
            for i in saved["state"]
        )
        outcomes.append((str(refusal.value), unchanged, 2 in state))
    (message, unchanged, dense_has_state), (torch_message, torch_unchanged, _) = outcomes
    assert (
        message
        == torch_message
        == ("SparseAdam does not support dense gradients, please consider Adam instead")
    )
    assert unchanged and not dense_has_state
    assert not torch_unchanged  # why optimlib checks every group first
