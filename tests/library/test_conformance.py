"""Generic tests that every optimlib optimizer passes, driven by optimizer_cases.py.

The oracle is ``torch.optim``: an optimlib optimizer and its twin run the same
scenario from the same starting point, in float64, and must agree on every
parameter and every state tensor.
"""

from __future__ import annotations

import copy
import io
import re
from typing import Any

import pytest
import torch
from torch import Tensor

import optimlib
from tests.library.optimizer_cases import OPTIMIZERS, OptimizerInfo, all_configs, one_config_each

STEPS = 60

# ---------------------------------------------------------------- the scenario


class Scenario:
    """Parameters of awkward shapes in two groups, and a run with missing gradients.

    - a 0-d tensor and a non-contiguous one among the parameters;
    - parameter 1 has no gradient on every fourth step (``grad = None``);
    - parameter 2 is frozen from step 30 on (``requires_grad_(False)``);
    - the second group overrides some options (``OptimizerInfo.group_overrides``).
    """

    SHAPES = ((5, 3), (7,), (), (2, 3, 4))

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float64, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)

        def draw(shape):
            return torch.randn(shape, generator=generator, dtype=dtype)

        tensors = [draw(shape) for shape in self.SHAPES]
        tensors.append(draw((6, 4)).t())  # a non-contiguous view
        self.params = [t.to(device).detach().requires_grad_() for t in tensors]
        assert not self.params[-1].is_contiguous()
        self.targets = [draw(tuple(p.shape)).to(device) for p in self.params]

    def groups(self, info: OptimizerInfo) -> list[dict[str, Any]]:
        return [
            {"params": self.params[:3]},
            {"params": self.params[3:], **info.group_overrides},
        ]

    def loss(self) -> Tensor:
        terms = [
            ((p - y) ** 2).sum() + torch.sin(3 * p).sum()
            for p, y in zip(self.params, self.targets, strict=True)
            if p.requires_grad
        ]
        return torch.stack(terms).sum()

    def compute_gradients(self, step: int) -> Tensor:
        if step == 30:
            self.params[2].requires_grad_(False)
        for p in self.params:
            p.grad = None
        loss = self.loss()
        loss.backward()
        if step % 4 == 3:
            self.params[1].grad = None
        return loss.detach()

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


def make(info: OptimizerInfo, cls: type, scenario: Scenario, config: dict[str, Any], **extra):
    # Schedulers update a tensor lr in place: every optimizer gets its own copy.
    options = {
        key: value.clone() if isinstance(value, Tensor) else value
        for key, value in {**config, **extra}.items()
    }
    return cls(scenario.groups(info), **options)


def make_ours(info: OptimizerInfo, scenario: Scenario, config: dict[str, Any], **extra):
    """optimlib's optimizer; where torch.optim refuses the configuration, so must optimlib.

    torch.optim.Adam refuses a tensor lr with foreach=True, for example: optimlib
    then raises the same error in the same words, and the test is skipped.
    """
    try:
        make(info, info.theirs, scenario, config, **extra)
    except ValueError as refusal:
        with pytest.raises(ValueError, match=re.escape(str(refusal))):
            make(info, info.ours, scenario, config, **extra)
        pytest.skip(f"torch.optim refuses this configuration, as optimlib does: {refusal}")
    return make(info, info.ours, scenario, config, **extra)


def assert_same_run(info, first: Scenario, second: Scenario, opt_a, opt_b) -> None:
    """Parameters, state tensors and group options all agree."""
    for a, b in zip(first.params, second.params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=info.rtol, atol=info.atol)
    state_a, state_b = opt_a.state_dict(), opt_b.state_dict()
    assert state_a["state"].keys() == state_b["state"].keys()
    for index, per_param in state_a["state"].items():
        assert per_param.keys() == state_b["state"][index].keys(), f"state keys of param {index}"
        for key, value in per_param.items():
            other = state_b["state"][index][key]
            if isinstance(value, Tensor):
                # 0-d scalar state may come back from torch's load_state_dict cast
                # to the parameter's dtype; its value is what must agree.
                torch.testing.assert_close(
                    value,
                    other,
                    rtol=info.rtol,
                    atol=info.atol,
                    check_dtype=value.ndim > 0,
                    msg=lambda m, k=key, i=index: f"state[{i}][{k}]: {m}",
                )
            else:
                assert value == other, f"state[{index}][{key}]"
    for group_a, group_b in zip(state_a["param_groups"], state_b["param_groups"], strict=True):
        assert group_a.keys() == group_b.keys(), "param_group keys differ from torch.optim's"


# ------------------------------------------------------------------- parity


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("info", "config"), all_configs())
def test_matches_torch_optim_over_many_steps(info, config, foreach, device):
    """Both optimlib paths against torch's for-loop, the reference implementation."""
    ours, theirs = Scenario(device), Scenario(device)
    opt_ours = make_ours(info, ours, config, foreach=foreach)
    opt_theirs = make(info, info.theirs, theirs, config, foreach=False)
    ours.run(opt_ours, range(STEPS))
    theirs.run(opt_theirs, range(STEPS))
    assert_same_run(info, ours, theirs, opt_ours, opt_theirs)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_foreach_matches_torch_foreach(info, config, device):
    if not info.torch_foreach_agrees(config):
        pytest.skip("torch's foreach path differs from its own for-loop here")
    ours, theirs = Scenario(device), Scenario(device)
    opt_ours = make_ours(info, ours, config, foreach=True)
    opt_theirs = make(info, info.theirs, theirs, config, foreach=True)
    ours.run(opt_ours, range(STEPS))
    theirs.run(opt_theirs, range(STEPS))
    assert_same_run(info, ours, theirs, opt_ours, opt_theirs)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_foreach_equals_for_loop(info, config, device):
    loop, multi = Scenario(device), Scenario(device)
    opt_loop = make(info, info.ours, loop, config, foreach=False)
    opt_multi = make_ours(info, multi, config, foreach=True)
    loop.run(opt_loop, range(STEPS))
    multi.run(opt_multi, range(STEPS))
    assert_same_run(info, loop, multi, opt_loop, opt_multi)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_default_options_and_group_keys_match_torch(info, config):
    scenario = Scenario(torch.device("cpu"))
    ours = make(info, info.ours, scenario, config)
    theirs = make(info, info.theirs, scenario, config)
    for group_ours, group_theirs in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert group_ours.keys() == group_theirs.keys()
        for key in group_ours:
            if key != "params":
                assert group_ours[key] == group_theirs[key], key
    assert ours.defaults == theirs.defaults


# ----------------------------------------------------------- state and copies


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours", "ours->ours"])
@pytest.mark.parametrize(("info", "config"), all_configs())
def test_state_dict_loads_both_ways_and_continues_identically(info, config, direction):
    source_cls, target_cls = {
        "ours->torch": (info.ours, info.theirs),
        "torch->ours": (info.theirs, info.ours),
        "ours->ours": (info.ours, info.ours),
    }[direction]
    device = torch.device("cpu")
    uninterrupted = Scenario(device)
    optimizer = make(info, source_cls, uninterrupted, config)
    uninterrupted.run(optimizer, range(STEPS // 2))

    resumed = Scenario(device)
    resumed.copy_values_from(uninterrupted)
    restored = make(info, target_cls, resumed, config)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))

    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same_run(info, uninterrupted, resumed, optimizer, restored)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_checkpoint_survives_torch_save_and_weights_only_load(info, config):
    device = torch.device("cpu")
    uninterrupted = Scenario(device)
    optimizer = make(info, info.ours, uninterrupted, config)
    uninterrupted.run(optimizer, range(STEPS // 2))
    buffer = io.BytesIO()
    torch.save(
        {"params": [p.detach() for p in uninterrupted.params], "optimizer": optimizer.state_dict()},
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = Scenario(device)
    with torch.no_grad():
        for param, saved in zip(resumed.params, checkpoint["params"], strict=True):
            param.copy_(saved)
    resumed.params[2].requires_grad_(uninterrupted.params[2].requires_grad)
    restored = make(info, info.ours, resumed, config)
    restored.load_state_dict(checkpoint["optimizer"])
    uninterrupted.run(optimizer, range(STEPS // 2, STEPS))
    resumed.run(restored, range(STEPS // 2, STEPS))
    assert_same_run(info, uninterrupted, resumed, optimizer, restored)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_deepcopy_is_an_independent_equal_optimizer(info, config):
    original = Scenario(torch.device("cpu"))
    optimizer = make(info, info.ours, original, config)
    original.run(optimizer, range(10))
    clone = copy.deepcopy(optimizer)
    twin = Scenario(torch.device("cpu"))
    twin.params = [p for group in clone.param_groups for p in group["params"]]
    assert all(a is not b for a, b in zip(original.params, twin.params, strict=True))
    original.run(optimizer, range(10, 20))
    twin.run(clone, range(10, 20))
    assert_same_run(info, original, twin, optimizer, clone)


# ------------------------------------------------------------------ the API


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_zero_grad_sets_to_none_or_zero(info, device):
    scenario = Scenario(device)
    optimizer = make(info, info.ours, scenario, info.configs[0])
    scenario.compute_gradients(0)
    optimizer.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in scenario.params if p.grad is not None)
    optimizer.zero_grad()
    assert all(p.grad is None for p in scenario.params)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_step_calls_the_closure_once_and_returns_its_loss(info, config, device):
    scenario = Scenario(device)
    optimizer = make(info, info.ours, scenario, config)
    calls = []

    def closure() -> Tensor:
        calls.append(torch.is_grad_enabled())
        return scenario.compute_gradients(0)

    with torch.no_grad():
        expected = scenario.loss()  # at the parameters before the step
        # Under no_grad on purpose: the optimizer must enable gradients for the closure.
        loss = optimizer.step(closure)
    assert calls == [True]
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert not torch.equal(scenario.loss().detach(), expected), "the step changed nothing"


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_update_is_in_place_and_builds_no_graph(info, config, device):
    scenario = Scenario(device)
    optimizer = make(info, info.ours, scenario, config)
    pointers = [p.data_ptr() for p in scenario.params]
    scenario.run(optimizer, range(3))
    assert [p.data_ptr() for p in scenario.params] == pointers
    assert all(p.is_leaf and p.grad_fn is None for p in scenario.params)
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if isinstance(value, Tensor):
                assert not value.requires_grad and value.device.type == device.type


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_state_keeps_the_parameters_dtype_and_device(info, config, device):
    scenario = Scenario(device, dtype=torch.float32)
    optimizer = make(info, info.ours, scenario, config)
    scenario.run(optimizer, range(3))
    for param in scenario.params:
        assert param.dtype == torch.float32
        for value in optimizer.state[param].values():
            if isinstance(value, Tensor) and value.ndim > 0:
                assert value.dtype == param.dtype and value.device == param.device


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_works_under_a_torch_lr_scheduler(info, config):
    runs = []
    for cls in (info.ours, info.theirs):
        scenario = Scenario(torch.device("cpu"))
        optimizer = make(info, cls, scenario, config)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
        scenario.run(optimizer, range(STEPS), scheduler=scheduler)
        runs.append((scenario, optimizer, scheduler.get_last_lr()))
    (ours, opt_ours, lrs_ours), (theirs, opt_theirs, lrs_theirs) = runs
    assert lrs_ours == pytest.approx([float(lr) for lr in lrs_theirs])
    assert_same_run(info, ours, theirs, opt_ours, opt_theirs)


@pytest.mark.parametrize(("info", "config"), all_configs())
def test_works_with_grad_scaler_including_skipped_steps(info, config, device):
    runs = []
    for cls in (info.ours, info.theirs):
        scenario = Scenario(device, dtype=torch.float32)
        optimizer = make(info, cls, scenario, config)
        scaler = torch.amp.GradScaler(device.type, init_scale=2.0**12, growth_interval=5)
        for step in range(20):
            optimizer.zero_grad()
            scaler.scale(scenario.loss()).backward()
            if step == 7:  # an overflow: the scaler must skip this step
                scenario.params[0].grad[0, 0] = float("inf")
            scaler.step(optimizer)
            scaler.update()
        runs.append((scenario, optimizer, scaler.get_scale()))
    (ours, opt_ours, scale_ours), (theirs, opt_theirs, scale_theirs) = runs
    assert scale_ours == scale_theirs
    float32 = OptimizerInfo(info.ours, info.theirs, (), rtol=1e-6, atol=1e-6)
    assert_same_run(float32, ours, theirs, opt_ours, opt_theirs)


@pytest.mark.parametrize(("info", "config"), one_config_each())
def test_compiled_step_gives_the_same_result(info, config, request):
    if info.name == "ASGD" and _torch_version() < (2, 14):
        # torch 2.13's compiler drops an in-place copy_ into a 0-d float64 tensor
        # (ASGD's average of the 0-d parameter); torch.optim.SGD is hit the same way.
        request.applymarker(pytest.mark.xfail(strict=True, reason="a torch 2.13 compiler bug"))
    torch._dynamo.reset()
    eager, compiled = Scenario(torch.device("cpu")), Scenario(torch.device("cpu"))
    opt_eager = make_ours(info, eager, config, foreach=True)
    opt_compiled = make_ours(info, compiled, config, foreach=True)
    compiled_step = torch.compile(opt_compiled.step, fullgraph=info.compiles_fullgraph)
    for step in range(4):
        eager.compute_gradients(step)
        opt_eager.step()
        compiled.compute_gradients(step)
        compiled_step()
    assert_same_run(info, eager, compiled, opt_eager, opt_compiled)


@pytest.mark.parametrize(
    "info", [i for i in OPTIMIZERS if i.sparse_config is not None], ids=lambda info: info.name
)
@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")
def test_sparse_gradients_match_torch(info):
    def run(cls) -> Tensor:
        embedding = torch.nn.Embedding(10, 3, sparse=True, dtype=torch.float64)
        torch.nn.init.constant_(embedding.weight, 1.0)
        optimizer = cls(embedding.parameters(), **info.sparse_config)
        for indices in ([1, 2], [2, 5, 5], [7]):
            optimizer.zero_grad()
            embedding(torch.tensor(indices)).pow(2).sum().backward()
            optimizer.step()
        return embedding.weight.detach()

    torch.testing.assert_close(run(info.ours), run(info.theirs), rtol=0, atol=0)


# --------------------------------------------------------------- bad input


def _bad_argument_params() -> list:
    return [
        pytest.param(info, kwargs, error, pattern, id=f"{info.name}-{index}")
        for info in OPTIMIZERS
        for index, (kwargs, error, pattern) in enumerate(info.bad_arguments)
    ]


@pytest.mark.parametrize(("info", "kwargs", "error", "pattern"), _bad_argument_params())
def test_bad_arguments_raise_a_clear_error(info, kwargs, error, pattern):
    weight = torch.ones(3, requires_grad=True)
    weight.grad = torch.ones(3)
    with pytest.raises(error, match=pattern):
        info.ours([weight], **kwargs)
    assert torch.equal(weight.detach(), torch.ones(3)), "a refused optimizer changed a parameter"


@pytest.mark.parametrize(
    ("info", "kwargs", "error"),
    [
        pytest.param(info, kwargs, error, id=f"{info.name}-{index}")
        for info in OPTIMIZERS
        for index, (kwargs, error, _) in enumerate(info.bad_arguments)
    ],
)
def test_bad_arguments_raise_torchs_error_type(info, kwargs, error):
    """Where torch.optim refuses an argument too, it raises the same type of error.

    Where it accepts one that optimlib refuses, optimlib is stricter on purpose
    (the API page lists these): NaN rates, strings for switches and the like.
    """
    weight = torch.ones(3, requires_grad=True)
    try:
        info.theirs([weight], **kwargs)
    except Exception as refusal:  # the type is what is compared
        assert isinstance(refusal, error), f"torch raises {type(refusal).__name__}: {refusal}"


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
@pytest.mark.parametrize(
    ("params", "error", "pattern"),
    [
        ([torch.zeros(1), 3.0], TypeError, r"element 1 of params is a float"),
        ([{"params": [torch.zeros(1), "w"]}], TypeError, r"element 1 of parameter group 0"),
        (torch.zeros(2), TypeError, r"single Tensor"),
        ([], ValueError, r"empty parameter list"),
        (5, TypeError, r"Invalid params"),
        ([{"lr": 0.1}], ValueError, r"no 'params' key"),
    ],
)
def test_bad_params_raise_naming_the_argument(info, params, error, pattern):
    with pytest.raises(error, match=pattern):
        info.ours(params, **info.configs[0])


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_generators_are_read_once_and_kept_whole(info):
    """model.parameters() is a generator, alone or inside a group dict."""
    base, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    for cls in (info.ours, info.theirs):
        flat = cls(base.parameters(), **info.configs[0])
        grouped = cls(
            [{"params": base.parameters()}, {"params": head.parameters(), "lr": 1e-3}],
            **info.configs[0],
        )
        assert [len(g["params"]) for g in flat.param_groups] == [2]
        assert [len(g["params"]) for g in grouped.param_groups] == [2, 2]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_named_parameters_are_accepted_like_torch(info):
    model = torch.nn.Linear(3, 2)
    ours = info.ours(model.named_parameters(), **info.configs[0])
    theirs = info.theirs(model.named_parameters(), **info.configs[0])
    assert ours.param_groups[0]["param_names"] == ["weight", "bias"]
    assert ours.param_groups[0].keys() == theirs.param_groups[0].keys()
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_sets_of_parameters_are_refused(info):
    weights = {torch.ones(1, requires_grad=True), torch.zeros(1, requires_grad=True)}
    for params in (weights, [{"params": weights}]):
        with pytest.raises(TypeError, match="set"):
            info.ours(params, **info.configs[0])


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_unimplemented_torch_options_are_refused_not_ignored(info):
    weight = torch.ones(3, requires_grad=True)
    for option in info.unimplemented:
        with pytest.raises(NotImplementedError, match=rf"does not implement {option}=True"):
            info.ours([weight], **{**info.configs[0], option: True})
    if "fused" not in info.unimplemented:
        return
    # ... also when a loaded state dict switches it on (capturable is not
    # checked at step time: Dynamo shows every group with capturable=True).
    optimizer = info.ours([weight], **info.configs[0])
    optimizer.param_groups[0]["fused"] = True
    weight.grad = torch.ones(3)
    before = weight.detach().clone()
    with pytest.raises(NotImplementedError):
        optimizer.step()
    torch.testing.assert_close(weight.detach(), before)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=lambda info: info.name)
def test_none_for_a_numeric_argument_is_refused_at_construction(info):
    weight = torch.ones(3, requires_grad=True)
    numeric = [
        name
        for name, value in info.ours([torch.ones(1, requires_grad=True)]).defaults.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    assert numeric, "no numeric hyperparameter found"
    for name in numeric:
        with pytest.raises((TypeError, ValueError), match=f"Invalid {name}"):
            info.ours([weight], **{name: None})


@pytest.mark.parametrize(
    "info", [i for i in OPTIMIZERS if i.sparse_config is None], ids=lambda info: info.name
)
def test_a_sparse_gradient_is_refused_with_torchs_error_before_anything_changes(info):
    def attempt(cls):
        dense = torch.ones(3, requires_grad=True)
        embedding = torch.nn.Embedding(4, 2, sparse=True)
        with torch.no_grad():
            embedding.weight.fill_(1.0)
        optimizer = cls([dense, embedding.weight], **info.configs[0])
        dense.grad = torch.ones(3)
        embedding(torch.tensor([1, 2])).sum().backward()
        with pytest.raises(RuntimeError) as refusal:
            optimizer.step()
        return str(refusal.value), dense, embedding.weight, optimizer

    message, dense, weight, optimizer = attempt(info.ours)
    torch_message, *_ = attempt(info.theirs)
    assert message == torch_message
    assert torch.equal(dense.detach(), torch.ones(3))
    assert torch.equal(weight.detach(), torch.ones(4, 2))
    assert all("step" not in state or state["step"] == 0 for state in optimizer.state.values())


@pytest.mark.parametrize(("info", "config"), one_config_each())
@pytest.mark.parametrize("as_number", [int, float], ids=["int", "float"])
def test_a_step_saved_as_a_number_loads_and_continues_like_a_tensor_step(info, config, as_number):
    scenario = Scenario(torch.device("cpu"))
    optimizer = make(info, info.ours, scenario, config)
    for step in range(3):
        scenario.compute_gradients(step)
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    if not any("step" in state for state in saved["state"].values()):
        pytest.skip(f"{info.name} keeps no step count")
    for state in saved["state"].values():
        if "step" in state:
            state["step"] = as_number(state["step"].item())
    twin = Scenario(torch.device("cpu"))
    twin.copy_values_from(scenario)
    resumed = make(info, info.ours, twin, config)
    resumed.load_state_dict(saved)
    for step in range(3, 6):
        scenario.compute_gradients(step)
        twin.compute_gradients(step)
        optimizer.step()
        resumed.step()
    for mine, theirs in zip(twin.params, scenario.params, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate")
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("info", "config"), one_config_each())
def test_a_parameter_listed_twice_is_updated_twice_as_torch_does(info, config, foreach):
    """torch.optim warns, then updates it twice in turn; the shared step counter reads 1, 2."""
    runs = []
    for cls, extra in ((info.ours, {"foreach": foreach}), (info.theirs, {"foreach": False})):
        generator = torch.Generator().manual_seed(0)
        twice = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
        once = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
        try:
            optimizer = cls([twice, once, twice], **_clone(config), **extra)
        except ValueError:  # torch.optim.Adam's tensor lr with foreach=True, refused alike
            pytest.skip("refused, as torch.optim refuses it")
        for _ in range(5):
            optimizer.zero_grad()
            (torch.sin(twice).sum() + (once**2).sum()).backward()
            optimizer.step()
        runs.append((twice.detach(), once.detach()))
    for mine, reference in zip(*runs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-14)


def _clone(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in config.items()}


#: Arguments torch.optim accepts that an older optimlib refused: optimlib takes
#: them too, with torch's result.
ACCEPTED_AS_TORCH_ACCEPTS = [
    ("Adam", {"amsgrad": 0}),
    ("Adam", {"amsgrad": 1, "maximize": 0}),
    ("RMSprop", {"centered": 1, "momentum": 0.5}),
    ("SGD", {"momentum": 0.9, "nesterov": 1}),
    ("SGD", {"momentum": 0.9, "foreach": 1}),
    ("Adamax", {"foreach": 0}),
    ("LBFGS", {"tolerance_grad": float("inf")}),
    ("LBFGS", {"tolerance_change": float("inf"), "history_size": 3}),
]


def _numpy_cases() -> list:
    numpy = pytest.importorskip("numpy")
    return [
        ("LBFGS", {"max_iter": numpy.int64(4), "history_size": numpy.int32(3)}),
        ("Adam", {"amsgrad": numpy.bool_(True)}),
        ("Adagrad", {"lr": numpy.float64(0.05)}),
    ]


def _run_both(name: str, kwargs: dict[str, Any]) -> None:
    runs = []
    for library in (optimlib, torch.optim):
        weight = torch.linspace(-1, 2, 5, dtype=torch.float64, requires_grad=True)
        optimizer = getattr(library, name)([weight], **kwargs)

        def closure(weight=weight, optimizer=optimizer) -> Tensor:
            optimizer.zero_grad()
            loss = (torch.cos(weight) + weight**2).sum()
            loss.backward()
            return loss

        for _ in range(4):
            optimizer.step(closure)
        runs.append(weight.detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "kwargs"), ACCEPTED_AS_TORCH_ACCEPTS, ids=str)
def test_what_torch_accepts_gives_torchs_result(name, kwargs):
    _run_both(name, kwargs)


def test_numpy_numbers_give_torchs_result():
    for name, kwargs in _numpy_cases():
        _run_both(name, kwargs)


def test_an_adam_checkpoint_loaded_into_adamw_keeps_decoupled_weight_decay():
    """torch.optim.AdamW's __setstate__ sets it again in every group, as optimlib's does."""
    for adam, adamw in ((optimlib.Adam, optimlib.AdamW), (torch.optim.Adam, torch.optim.AdamW)):
        weight = torch.ones(3, requires_grad=True)
        saver = adam([weight], weight_decay=0.1)
        weight.grad = torch.ones(3)
        saver.step()
        loader = adamw([weight], weight_decay=0.1)
        loader.load_state_dict(saver.state_dict())
        assert loader.param_groups[0]["decoupled_weight_decay"] is True
