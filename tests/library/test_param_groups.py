"""optimlib.param_groups.weight_decay_groups: every parameter once, in the right group."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import optimlib
from optimlib.param_groups import weight_decay_groups


class Network(nn.Module):
    """One of everything: convolutions, norms, linear layers, an embedding, a tied head,
    a frozen layer, a recurrent layer, attention and parameters of a custom module."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.batch_norm = nn.BatchNorm2d(4)
        self.transposed = nn.ConvTranspose1d(2, 2, 3, bias=False)
        self.group_norm = nn.GroupNorm(2, 4)
        self.layer_norm = nn.LayerNorm(6)
        self.rms_norm = nn.RMSNorm(6)
        self.linear = nn.Linear(6, 6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.rnn = nn.GRU(6, 6)
        self.attention = nn.MultiheadAttention(6, 2)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight  # tied: an embedding, so undecayed
        self.shared = nn.Linear(6, 6)
        self.shared_again = self.shared  # one module under two names
        self.scale = nn.Parameter(torch.ones(()))
        self.mixing = nn.Parameter(torch.eye(6))


EXPECTED_DECAYED = {
    "conv.weight",
    "transposed.weight",
    "linear.weight",
    "frozen.weight",
    "rnn.weight_ih_l0",
    "rnn.weight_hh_l0",
    "attention.in_proj_weight",
    "attention.out_proj.weight",
    "shared.weight",
    "mixing",
}
EXPECTED_UNDECAYED = {
    "embed.weight",
    "conv.bias",
    "batch_norm.weight",
    "batch_norm.bias",
    "group_norm.weight",
    "group_norm.bias",
    "layer_norm.weight",
    "layer_norm.bias",
    "rms_norm.weight",
    "linear.bias",
    "frozen.bias",
    "rnn.bias_ih_l0",
    "rnn.bias_hh_l0",
    "attention.in_proj_bias",
    "attention.out_proj.bias",
    "shared.bias",
    "scale",
}


def test_every_parameter_lands_in_exactly_one_group_the_right_one():
    model = Network()
    decay, no_decay = weight_decay_groups(model, 0.1, with_names=True)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = [name for name, _ in decay["params"]]
    undecayed = [name for name, _ in no_decay["params"]]
    assert set(decayed) == EXPECTED_DECAYED
    assert set(undecayed) == EXPECTED_UNDECAYED
    grouped = [p for _, p in decay["params"]] + [p for _, p in no_decay["params"]]
    assert len({id(p) for p in grouped}) == len(grouped) == len(list(model.parameters()))
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters()}
    # The names are those named_parameters() gives, in its order within each group.
    names = dict(model.named_parameters())
    for name, param in decay["params"] + no_decay["params"]:
        assert names[name] is param
    order = [name for name, _ in model.named_parameters()]
    assert decayed == [n for n in order if n in EXPECTED_DECAYED]
    assert undecayed == [n for n in order if n in EXPECTED_UNDECAYED]


def test_without_names_the_groups_hold_the_same_tensors():
    model = Network()
    named = weight_decay_groups(model, 0.1, with_names=True)
    plain = weight_decay_groups(model, 0.1)
    for named_group, plain_group in zip(named, plain, strict=True):
        assert [p for _, p in named_group["params"]] == plain_group["params"]
        assert all(isinstance(p, nn.Parameter) for p in plain_group["params"])


def test_the_classification_can_be_adjusted():
    model = Network()
    decay, no_decay = weight_decay_groups(
        model,
        0.1,
        no_decay_types=(nn.LayerNorm,),
        no_decay_names=("mixing", "linear.weight"),
        with_names=True,
    )
    decayed = {name for name, _ in decay["params"]}
    # Only LayerNorm is exempt by its type now: the embedding (and the head tied to it)
    # is decayed, being a matrix; BatchNorm's vectors still are not (rule 4).
    assert "embed.weight" in decayed
    assert "batch_norm.weight" not in decayed
    assert {"mixing", "linear.weight", "layer_norm.weight"}.isdisjoint(decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_a_tied_weight_is_decayed_only_if_every_use_decays_it():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(3, 3)
            self.second = nn.Linear(3, 3)
            self.second.weight = self.first.weight

    decay, no_decay = weight_decay_groups(Tied(), 0.1, with_names=True)
    assert [name for name, _ in decay["params"]] == ["first.weight"]
    decay, no_decay = weight_decay_groups(
        Tied(), 0.1, no_decay_names=("second.weight",), with_names=True
    )
    assert decay["params"] == []
    assert [name for name, _ in no_decay["params"]] == ["first.weight", "first.bias", "second.bias"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=re.escape("Invalid weight_decay value: -0.1")):
        weight_decay_groups(nn.Linear(2, 2), -0.1)
    with pytest.raises(ValueError, match=re.escape("no parameter 'linear.wieght'")):
        weight_decay_groups(nn.Sequential(), 0.1, no_decay_names=("linear.wieght",))


@pytest.mark.parametrize("adamw", [optimlib.AdamW, torch.optim.AdamW], ids=["optimlib", "torch"])
@pytest.mark.parametrize("with_names", [False, True])
def test_adamw_with_these_groups_leaves_biases_and_norms_undecayed(adamw, with_names, device):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 2)
    ).to(device=device, dtype=torch.float64)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.rand_like(param))  # norms start at 1 and 0, so move them
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    lr, weight_decay, steps = 0.1, 0.5, 4
    optimizer = adamw(weight_decay_groups(model, weight_decay, with_names=with_names), lr=lr)
    if with_names:
        assert optimizer.param_groups[0]["param_names"] == ["0.weight", "4.weight"]
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()
    # With zero gradients Adam's moments stay 0, so only the decoupled decay moves a
    # parameter: p <- (1 - lr * weight_decay) p at each step, or not at all.
    shrink = (1 - lr * weight_decay) ** steps
    for name, param in model.named_parameters():
        if name in ("0.weight", "4.weight"):
            torch.testing.assert_close(param.detach(), before[name] * shrink, rtol=1e-14, atol=0)
            assert not torch.equal(param.detach(), before[name])
        else:
            assert torch.equal(param.detach(), before[name]), name
