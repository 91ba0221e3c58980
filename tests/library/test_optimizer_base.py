"""The shared base class: declared state, forwarded options, buckets, all-or-nothing steps."""

from __future__ import annotations

import copy
import pickle
import re
import subprocess
import sys

import pytest
import torch

import optimlib
from optimlib.optimizer import Optimizer, counter, spec, zeros


def _params(seed: int = 0, dtypes=(torch.float64,)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3, 2, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()
        for dtype in dtypes
    ]


def _set_grads(params: list[torch.Tensor], step: int) -> None:
    for index, param in enumerate(params):
        param.grad = torch.full_like(param, 0.1 * (index + 1)) * (1 + step % 3) - param.detach()


def test_importing_the_library_loads_nothing_beyond_torch():
    """optimlib adds only its own modules to what ``import torch`` loads.

    torch itself imports numpy and tqdm (in ``torch.hub``) when they are
    installed, so their presence says nothing about optimlib; what counts is
    that optimlib imports nothing more, and never its book helpers.
    """
    code = (
        "import sys, torch; before = set(sys.modules); import optimlib; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] != 'optimlib')); "
        "print(sorted(m for m in sys.modules if m.startswith('optimlib.book')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    beyond_torch, book = result.stdout.splitlines()[-2:]
    assert beyond_torch == "[]", f"import optimlib loaded {beyond_torch}"
    assert book == "[]", f"import optimlib loaded {book}"


@pytest.mark.parametrize(
    ("cls", "option", "key", "value"),
    [
        (optimlib.Adam, "amsgrad", "max_exp_avg_sq", True),
        (optimlib.RMSprop, "centered", "grad_avg", True),
        (optimlib.RMSprop, "momentum", "momentum_buffer", 0.9),
    ],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_an_option_switched_on_mid_run_gets_its_state_created(cls, option, key, value, foreach):
    params = _params()
    optimizer = cls(params, lr=0.01, foreach=foreach)
    for step in range(3):
        _set_grads(params, step)
        optimizer.step()
    assert key not in optimizer.state[params[0]]
    optimizer.param_groups[0][option] = value
    before = params[0].detach().clone()
    _set_grads(params, 3)
    optimizer.step()
    state = optimizer.state[params[0]]
    assert state[key].shape == params[0].shape
    assert not torch.equal(params[0], before)
    if "step" in state:
        assert state["step"].item() == 4


def _sparse_gradient(optimizer, weight) -> None:
    weight.grad = torch.ones_like(weight).to_sparse()


def _fused_switched_on(optimizer, weight) -> None:
    weight.grad = torch.ones_like(weight)
    optimizer.param_groups[1]["fused"] = True
    optimizer.param_groups[1]["foreach"] = True  # which torch refuses together


@pytest.mark.parametrize(
    ("cls", "options", "break_second_group", "message"),
    [
        (optimlib.Adam, {}, _sparse_gradient, "does not support sparse gradients"),
        (optimlib.RMSprop, {"momentum": 0.9}, _sparse_gradient, "does not support sparse"),
        (optimlib.Adagrad, {}, _fused_switched_on, "cannot be `True` together"),
    ],
    ids=["Adam-sparse", "RMSprop-sparse", "Adagrad-fused-and-foreach"],
)
def test_an_error_in_one_group_leaves_every_group_and_state_unchanged(
    cls, options, break_second_group, message
):
    real, second = _params(), [torch.randn(2, dtype=torch.float64, requires_grad=True)]
    optimizer = cls([{"params": real}, {"params": second}], lr=0.1, **options)
    _set_grads(real, 0)
    break_second_group(optimizer, second[0])
    before = [p.detach().clone() for p in real]
    state_before = copy.deepcopy(optimizer.state_dict()["state"])
    with pytest.raises(RuntimeError, match=re.escape(message)):
        optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(real, before, strict=True))
    state_after = optimizer.state_dict()["state"]
    assert state_after.keys() == state_before.keys()
    for index, entries in state_before.items():
        assert all(torch.equal(v, state_after[index][k]) for k, v in entries.items())


def test_an_old_checkpoint_without_newer_options_loads_with_their_defaults():
    params = _params()
    optimizer = optimlib.Adam(params, lr=0.01)
    _set_grads(params, 0)
    optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())  # state_dict() shares the state tensors
    for group in saved["param_groups"]:
        del group["maximize"], group["decoupled_weight_decay"]
    resumed_params = [p.detach().clone().requires_grad_() for p in params]
    resumed = optimlib.Adam(resumed_params, lr=0.01)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["maximize"] is False
    for step in range(1, 4):
        _set_grads(params, step)
        _set_grads(resumed_params, step)
        optimizer.step()
        resumed.step()
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params, strict=True))


def _scaled_sign_for_loop(params, grads, velocities, steps, *, lr, decay):
    for param, grad, velocity, step in zip(params, grads, velocities, steps, strict=True):
        step += 1
        velocity.mul_(decay).add_(grad.sign())
        param.add_(velocity, alpha=-lr)


BUCKETS: list[tuple[torch.dtype, int, bool]] = []


def _scaled_sign_foreach(params, grads, velocities, steps, *, lr, decay):
    BUCKETS.append((params[0].dtype, len(params), params[0].dim() == 2))
    for step in steps:
        step += 1
    torch._foreach_mul_(velocities, decay)
    torch._foreach_add_(velocities, torch._foreach_sign(grads))
    torch._foreach_add_(params, velocities, alpha=-lr)


class ScaledSign(Optimizer):
    """A small optimizer in the base class's shape, with an extra bucket key."""

    state_spec = spec(velocity=zeros(), step=counter())
    for_loop_update, foreach_update = _scaled_sign_for_loop, _scaled_sign_foreach

    def __init__(self, params, lr=0.1, decay=0.5, *, foreach=None):
        super().__init__(params, optimlib.optimizer.defaults_from(locals()))

    def bucket_key(self, param):
        return param.dim() == 2


def test_foreach_runs_once_per_device_dtype_and_extra_key_and_equals_the_for_loop():
    shapes_and_dtypes = [((3, 2), torch.float32), ((4,), torch.float32), ((2, 2), torch.float64)]
    shapes_and_dtypes += [((3, 3), torch.float32)]

    def make():
        generator = torch.Generator().manual_seed(1)
        return [
            torch.randn(shape, generator=generator, dtype=dtype).requires_grad_()
            for shape, dtype in shapes_and_dtypes
        ]

    loop_params, foreach_params = make(), make()
    loop, foreach = ScaledSign(loop_params, foreach=False), ScaledSign(foreach_params, foreach=True)
    assert loop.defaults == {"lr": 0.1, "decay": 0.5, "foreach": False}
    BUCKETS.clear()
    for step in range(3):
        for params in (loop_params, foreach_params):
            _set_grads(params, step)
        loop.step()
        foreach.step()
    assert sorted(BUCKETS[:3], key=str) == sorted(
        [(torch.float32, 2, True), (torch.float32, 1, False), (torch.float64, 1, True)], key=str
    )
    for a, b in zip(loop_params, foreach_params, strict=True):
        assert torch.equal(a, b)
    assert foreach.state[foreach_params[0]]["step"].item() == 3


def test_an_update_whose_signature_does_not_match_the_state_is_refused():
    def update(params, grads, velocities, *, lr):
        pass

    with pytest.raises(TypeError, match="2 entries of state_spec"):

        class Broken(Optimizer):
            state_spec = spec(velocity=zeros(), step=counter())
            for_loop_update = update


def test_foreach_true_without_a_foreach_update_is_refused():
    class LoopOnly(Optimizer):
        for_loop_update = staticmethod(lambda params, grads, *, lr: None)

        def __init__(self, params, lr=0.1, foreach=None):
            super().__init__(params, {"lr": lr, "foreach": foreach})

    with pytest.raises(ValueError, match="Invalid foreach=True"):
        LoopOnly(_params(), foreach=True)
    LoopOnly(_params(), foreach=None).step()


def test_plain_sgd_creates_no_state_and_hyperparameters_come_from_the_group():
    params = _params()
    optimizer = optimlib.SGD(params, lr=0.1)
    _set_grads(params, 0)
    optimizer.step()
    assert len(optimizer.state) == 0
    assert optimizer.hyperparameters(optimizer.param_groups[0], optimlib.sgd.sgd_for_loop) == {
        "lr": 0.1,
        "momentum": 0,
        "dampening": 0,
        "weight_decay": 0,
        "nesterov": False,
        "maximize": False,
    }


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_keeps_the_optimizers_own_group_keys(how):
    """torch's __setstate__ adds "differentiable" to defaults; L-BFGS has no such option."""
    weight = torch.zeros(2, requires_grad=True)
    for cls in (optimlib.LBFGS, optimlib.Adam):
        optimizer = cls([weight])
        twin = (
            copy.deepcopy(optimizer) if how == "deepcopy" else pickle.loads(pickle.dumps(optimizer))
        )
        assert twin.param_groups[0].keys() == optimizer.param_groups[0].keys()
        if cls is optimlib.LBFGS:
            assert "differentiable" not in twin.param_groups[0]
