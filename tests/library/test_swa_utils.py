"""optimlib.swa_utils against torch.optim.swa_utils: the same averages, rates and statistics."""

from __future__ import annotations

import ast
import copy
import inspect
import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as torch_sched, swa_utils as torch_swa

import optimlib
from optimlib import lr_scheduler as ours_sched, swa_utils as ours
from optimlib.swa_utils import SWALR, AveragedModel, update_bn

UPDATES = 40


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """BatchNorm's kernels on these tiny batches spend far longer starting threads than
    computing (tens of milliseconds a call on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(device="cpu", seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2, bias=False)
    ).to(device=device, dtype=torch.float64)


def _train_a_little(model, generator):
    """Move the weights and, through a forward pass in training mode, the BatchNorm buffers."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(noise.to(device), alpha=0.3)
        model.train()
        inputs = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        model(inputs.to(device))


def _same_tensors(ours_state, torch_state):
    assert list(ours_state) == list(torch_state)
    for key, value in ours_state.items():
        assert value.dtype == torch_state[key].dtype, key
        assert torch.equal(value, torch_state[key]), key


# name -> (the keyword arguments built from a module: ours or torch's)
AVERAGING = {
    "swa-default": lambda m: {},
    "swa-avg_fn": lambda m: {"avg_fn": m.get_swa_avg_fn()},
    "ema-avg_fn": lambda m: {"avg_fn": m.get_ema_avg_fn(0.9)},
    "ema-multi_avg_fn": lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn(0.9)},
    "ema-multi_avg_fn-default-decay": lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn()},
}


def _torch_swa_with_integers(averaged, current, num_averaged):
    """torch's multi-tensor SWA for floating tensors, its one-tensor SWA for integer ones.

    What optimlib's get_swa_multi_avg_fn does; torch's own raises on integer tensors
    (BatchNorm's num_batches_tracked), as does its default average on GPUs with
    use_buffers=True.
    """
    if torch.is_floating_point(averaged[0]):
        torch_swa.get_swa_multi_avg_fn()(averaged, current, num_averaged)
    else:
        for average, value in zip(averaged, current, strict=True):
            average.copy_(torch_swa.get_swa_avg_fn()(average, value, num_averaged))


def _run_both(kwargs_for, device, use_buffers, updates=UPDATES, torch_kwargs=None):
    model = _model(device)
    if torch_kwargs is None:
        torch_kwargs = kwargs_for(torch_swa)
    averaged = [
        AveragedModel(model, use_buffers=use_buffers, **kwargs_for(ours)),
        torch_swa.AveragedModel(model, use_buffers=use_buffers, **torch_kwargs),
    ]
    generator = torch.Generator().manual_seed(1)
    for _ in range(updates):
        _train_a_little(model, generator)
        for swa_model in averaged:
            swa_model.update_parameters(model)
    return model, averaged


@pytest.mark.parametrize("use_buffers", [False, True], ids=["params", "use_buffers"])
@pytest.mark.parametrize("name", AVERAGING)
def test_averaged_model_equals_torchs_over_many_updates(name, use_buffers, device):
    torch_kwargs = None
    if name == "swa-default" and use_buffers and device.type in ours.FOREACH_DEVICE_TYPES:
        torch_kwargs = {"multi_avg_fn": _torch_swa_with_integers}
    model, (mine, theirs) = _run_both(
        AVERAGING[name], device, use_buffers, torch_kwargs=torch_kwargs
    )
    _same_tensors(mine.state_dict(), theirs.state_dict())
    assert mine.n_averaged.item() == UPDATES
    assert mine.n_averaged.device == mine.module[0].weight.device
    # The average moved away from the model, so the comparison above compared something.
    assert not torch.equal(mine.module[0].weight, model[0].weight)
    if use_buffers:
        assert not torch.equal(mine.module[1].running_mean, model[1].running_mean)
    else:
        assert torch.equal(mine.module[1].running_mean, model[1].running_mean)
    inputs = torch.randn(4, 3, dtype=torch.float64, device=device)
    mine.eval()
    theirs.eval()
    assert torch.equal(mine(inputs), theirs(inputs))


def test_swa_multi_avg_fn_equals_torchs_on_floating_tensors():
    # With use_buffers=True torch's version fails on num_batches_tracked (addcdiv refuses
    # integers); here the buffers are copied, so only floating tensors are averaged.
    _, (mine, theirs) = _run_both(
        lambda m: {"multi_avg_fn": m.get_swa_multi_avg_fn()}, "cpu", use_buffers=False
    )
    _same_tensors(mine.state_dict(), theirs.state_dict())


def test_swa_multi_avg_fn_averages_integer_buffers_as_the_one_tensor_formula():
    """use_buffers=True with BatchNorm: floats by lerp, num_batches_tracked by the mean."""

    model = _model()
    mine = AveragedModel(model, multi_avg_fn=ours.get_swa_multi_avg_fn(), use_buffers=True)
    theirs = torch_swa.AveragedModel(model, multi_avg_fn=_torch_swa_with_integers, use_buffers=True)
    generator = torch.Generator().manual_seed(2)
    for _ in range(UPDATES):
        _train_a_little(model, generator)
        mine.update_parameters(model)
        theirs.update_parameters(model)
    _same_tensors(mine.state_dict(), theirs.state_dict())
    # the mean of 1, 2, ..., 40 forward passes, truncated at every update as torch does on CPU
    assert 1 <= mine.module[1].num_batches_tracked.item() < model[1].num_batches_tracked.item()


@pytest.mark.parametrize("use_buffers", [False, True], ids=["params", "use_buffers"])
def test_gpu_path_equals_torchs_gpu_path(monkeypatch, use_buffers):
    """On CUDA both libraries average with one multi-tensor lerp; emulated here on the CPU."""
    monkeypatch.setattr(ours, "FOREACH_DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(torch_swa, "_get_foreach_kernels_supported_devices", lambda: ["cpu"])
    torch_kwargs = {"multi_avg_fn": _torch_swa_with_integers} if use_buffers else None
    _, (mine, theirs) = _run_both(
        AVERAGING["swa-default"], "cpu", use_buffers, torch_kwargs=torch_kwargs
    )
    _same_tensors(mine.state_dict(), theirs.state_dict())
    # The lerp's weight is a float32 tensor, as in torch: not the exact one-tensor mean.
    _, (exact, _) = _run_both(AVERAGING["swa-avg_fn"], "cpu", use_buffers=False)
    assert not torch.equal(mine.module[0].weight, exact.module[0].weight)
    torch.testing.assert_close(mine.module[0].weight, exact.module[0].weight, rtol=1e-6, atol=0)


def test_swa_is_the_mean_of_the_models_seen():
    model = _model()
    swa_model = AveragedModel(model, use_buffers=True)
    generator = torch.Generator().manual_seed(3)
    snapshots = []
    for _ in range(25):
        _train_a_little(model, generator)
        swa_model.update_parameters(model)
        snapshots.append(copy.deepcopy(model.state_dict()))
    for key, average in swa_model.module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        mean = torch.stack([snapshot[key] for snapshot in snapshots]).mean(0)
        torch.testing.assert_close(average, mean, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("form", ["avg_fn", "multi_avg_fn"])
def test_ema_is_the_exponentially_weighted_sum(form):
    decay = 0.8
    make = ours.get_ema_avg_fn if form == "avg_fn" else ours.get_ema_multi_avg_fn
    model = _model()
    ema = AveragedModel(model, **{form: make(decay)})
    generator = torch.Generator().manual_seed(4)
    weights = []
    for _ in range(15):
        _train_a_little(model, generator)
        ema.update_parameters(model)
        weights.append(model[0].weight.detach().clone())
    n = len(weights)
    expected = decay ** (n - 1) * weights[0] + sum(
        (1 - decay) * decay ** (n - 1 - i) * weights[i] for i in range(1, n)
    )
    torch.testing.assert_close(ema.module[0].weight, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("num_averaged", [3, torch.tensor(3)], ids=["int", "tensor"])
def test_averaging_functions_equal_torchs_on_their_own(num_averaged):
    torch.manual_seed(5)
    averages = [torch.randn(4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float32)]
    values = [torch.randn_like(a) for a in averages]
    for name in ("get_swa_avg_fn", "get_ema_avg_fn"):
        for average, value in zip(averages, values, strict=True):
            mine = getattr(ours, name)()(average, value, num_averaged)
            theirs = getattr(torch_swa, name)()(average, value, num_averaged)
            assert torch.equal(mine, theirs), name
    for name in ("get_swa_multi_avg_fn", "get_ema_multi_avg_fn"):
        for average, value in zip(averages, values, strict=True):
            mine, theirs = [average.clone()], [average.clone()]
            getattr(ours, name)()(mine, [value], num_averaged)
            getattr(torch_swa, name)()(theirs, [value], num_averaged)
            assert torch.equal(mine[0], theirs[0]), name
            assert not torch.equal(mine[0], average)
    integers = (torch.tensor([7, -3, 10]), torch.tensor([2, 5, 11]))
    mine, theirs = integers[0].clone(), integers[0].clone()
    ours.get_ema_multi_avg_fn(0.7)([mine], [integers[1]], num_averaged)
    torch_swa.get_ema_multi_avg_fn(0.7)([theirs], [integers[1]], num_averaged)
    assert torch.equal(mine, theirs)


def test_averaged_model_on_another_device_equals_torchs(device):
    model = _model()  # on the CPU; the copy goes to `device`
    mine = AveragedModel(model, device=device, multi_avg_fn=ours.get_ema_multi_avg_fn(0.5))
    theirs = torch_swa.AveragedModel(
        model, device=device, multi_avg_fn=torch_swa.get_ema_multi_avg_fn(0.5)
    )
    assert mine.n_averaged.device.type == device.type
    assert mine.module[0].weight.device.type == device.type
    generator = torch.Generator().manual_seed(6)
    for _ in range(10):
        _train_a_little(model, generator)
        mine.update_parameters(model)
        theirs.update_parameters(model)
    _same_tensors(mine.state_dict(), theirs.state_dict())


def test_device_argument_moves_the_copy_as_torchs_does():
    model = _model()
    mine, theirs = AveragedModel(model, device="meta"), torch_swa.AveragedModel(model, "meta")
    for (key, value), other in zip(
        mine.state_dict().items(), theirs.state_dict().values(), strict=True
    ):
        assert (value.device, value.dtype, value.shape) == (other.device, other.dtype, other.shape)
        assert value.device.type == "meta", key
    assert model[0].weight.device.type == "cpu"


@pytest.mark.parametrize("direction", ["ours->torch", "torch->ours"])
def test_averaged_model_state_dict_loads_both_ways_and_continues(direction):
    model = _model()
    generator = torch.Generator().manual_seed(7)
    first, second = (
        (AveragedModel, torch_swa.AveragedModel)
        if direction == "ours->torch"
        else (torch_swa.AveragedModel, AveragedModel)
    )
    source, reference = first(model, use_buffers=True), second(model, use_buffers=True)
    for _ in range(5):
        _train_a_little(model, generator)
        source.update_parameters(model)
        reference.update_parameters(model)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    resumed = second(_model(seed=9), use_buffers=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(5):
        _train_a_little(model, generator)
        resumed.update_parameters(model)
        reference.update_parameters(model)
    _same_tensors(resumed.state_dict(), reference.state_dict())
    assert resumed.n_averaged.item() == 10


def test_averaged_model_forwards_arguments_and_deep_copies():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = nn.Parameter(torch.tensor(2.0))

        def forward(self, x, *, offset=0.0):
            return self.factor * x + offset

    model = Scale()
    averaged = AveragedModel(model)
    assert averaged(torch.tensor(3.0), offset=1.0).item() == 7.0
    assert averaged.module.factor is not model.factor
    assert list(averaged.state_dict()) == ["n_averaged", "module.factor"]


def test_both_averaging_functions_are_refused_with_torchs_message():
    model = nn.Linear(2, 2)
    kwargs = {"avg_fn": ours.get_swa_avg_fn(), "multi_avg_fn": ours.get_swa_multi_avg_fn()}
    with pytest.raises(AssertionError) as theirs:
        torch_swa.AveragedModel(model, **kwargs)
    with pytest.raises(AssertionError) as mine:
        AveragedModel(model, **kwargs)
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
@pytest.mark.parametrize("name", ["get_ema_avg_fn", "get_ema_multi_avg_fn"])
def test_bad_decay_is_refused_with_torchs_message(name, decay):
    with pytest.raises(ValueError) as theirs:
        getattr(torch_swa, name)(decay)
    with pytest.raises(ValueError) as mine:
        getattr(ours, name)(decay)
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("name", ["get_ema_avg_fn", "get_ema_multi_avg_fn"])
def test_nan_decay_is_refused(name):
    # torch takes it, and every average becomes NaN
    with pytest.raises(ValueError, match=r"Invalid decay value nan"):
        getattr(ours, name)(math.nan)


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize(
    "other",
    [
        lambda: nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU()),
        lambda: nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)),
        lambda: nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 2)),
    ],
    ids=["fewer-tensors", "other-shape", "no-buffers"],
)
def test_a_model_of_another_structure_is_refused_before_anything_changes(other, use_buffers):
    model = _model()
    averaged = AveragedModel(model, use_buffers=use_buffers)
    averaged.update_parameters(model)
    before = copy.deepcopy(averaged.state_dict())
    with pytest.raises(ValueError, match=r"update_parameters: .*(has|shape)"):
        averaged.update_parameters(other().double())
    _same_tensors(averaged.state_dict(), before)


# -------------------------------------------------------------------- SWALR


def _optimizer(kind, lr=0.1):
    weights = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    groups = [{"params": weights[:1]}, {"params": weights[1:], "lr": lr / 2}]
    if kind == "torch-adam":
        return torch.optim.Adam(groups, lr=lr)
    if kind == "optimlib-adam":
        return optimlib.Adam(groups, lr=lr)
    return optimlib.SGD(groups, lr=lr, momentum=0.9)


def _lrs(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


def _trace(optimizer, scheduler, steps):
    trace = [(_lrs(optimizer), scheduler.get_last_lr())]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        trace.append((_lrs(optimizer), scheduler.get_last_lr()))
    return trace


@pytest.mark.parametrize("swa_lr", [0.01, [0.2, 0.003]], ids=["one", "per-group"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 3, 10])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("kind", ["optimlib-sgd", "optimlib-adam", "torch-adam"])
def test_swalr_rates_equal_torchs_step_by_step(kind, strategy, anneal_epochs, swa_lr):
    traces = []
    for scheduler_class in (SWALR, torch_swa.SWALR):
        optimizer = _optimizer(kind)
        scheduler = scheduler_class(
            optimizer, swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=strategy
        )
        traces.append(_trace(optimizer, scheduler, 15))
        final = swa_lr if isinstance(swa_lr, list) else [swa_lr, swa_lr]
        assert _lrs(optimizer) == final
    assert traces[0] == traces[1]


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_swalr_follows_its_formula(strategy):
    optimizer = _optimizer("optimlib-sgd", lr=0.5)
    scheduler = SWALR(optimizer, swa_lr=0.1, anneal_epochs=4, anneal_strategy=strategy)
    rates = [g[0] for g, _ in _trace(optimizer, scheduler, 6)]
    shape = (lambda x: (1 - math.cos(math.pi * x)) / 2) if strategy == "cos" else (lambda x: x)
    expected = [0.5 + (0.1 - 0.5) * shape(min(1, t / 4)) for t in range(7)]
    assert rates == pytest.approx(expected, rel=1e-14)


def _docs_cosine(module, optimizer):
    return module.CosineAnnealingLR(optimizer, T_max=30)


def _docs_multiplicative(module, optimizer):
    return module.MultiplicativeLR(optimizer, lr_lambda=_point_nine)


def _point_nine(epoch):
    return 0.9


@pytest.mark.parametrize(
    ("before", "strategy", "anneal_epochs"),
    [(_docs_cosine, "cos", 10), (_docs_multiplicative, "linear", 20), (_docs_cosine, "cos", 0)],
    ids=["CosineAnnealingLR", "MultiplicativeLR-linear", "CosineAnnealingLR-no-annealing"],
)
def test_swalr_after_another_scheduler_as_in_torchs_docs(before, strategy, anneal_epochs):
    traces = []
    for sched_module, swa_module in ((ours_sched, ours), (torch_sched, torch_swa)):
        optimizer = _optimizer("optimlib-sgd")
        scheduler = before(sched_module, optimizer)
        swa_scheduler = swa_module.SWALR(
            optimizer, anneal_strategy=strategy, anneal_epochs=anneal_epochs, swa_lr=0.05
        )
        trace = []
        for epoch in range(40):
            optimizer.step()
            if epoch > 16:
                swa_scheduler.step()
            else:
                scheduler.step()
            trace.append(_lrs(optimizer))
        traces.append(trace)
        assert trace[-1] == [0.05, 0.05]
        assert trace[16] != trace[18]
    assert traces[0] == traces[1]


def test_swalr_state_dict_has_torchs_entries():
    states = []
    for scheduler_class in (SWALR, torch_swa.SWALR):
        optimizer = _optimizer("optimlib-sgd")
        scheduler = scheduler_class(optimizer, swa_lr=[0.01, 0.02], anneal_strategy="linear")
        for _ in range(3):
            optimizer.step()
            scheduler.step()
        states.append((scheduler.state_dict(), optimizer.state_dict()["param_groups"]))
    assert states[0] == states[1]
    assert list(states[0][0]) == list(states[1][0])


@pytest.mark.parametrize("direction", ["ours->ours", "ours->torch", "torch->ours"])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_swalr_state_dict_resumes_identically_both_ways(strategy, direction):
    source_class, target_class = {
        "ours->ours": (SWALR, SWALR),
        "ours->torch": (SWALR, torch_swa.SWALR),
        "torch->ours": (torch_swa.SWALR, SWALR),
    }[direction]
    optimizer = _optimizer("optimlib-sgd")
    scheduler = source_class(optimizer, swa_lr=0.01, anneal_epochs=8, anneal_strategy=strategy)
    uninterrupted = _trace(optimizer, scheduler, 12)

    optimizer = _optimizer("optimlib-sgd")
    scheduler = source_class(optimizer, swa_lr=0.01, anneal_epochs=8, anneal_strategy=strategy)
    first = _trace(optimizer, scheduler, 4)
    buffer = io.BytesIO()
    torch.save({"opt": optimizer.state_dict(), "sched": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    optimizer = _optimizer("optimlib-sgd", lr=0.7)
    # the other anneal strategy: loading must bring the saved one back
    other = "linear" if strategy == "cos" else "cos"
    scheduler = target_class(optimizer, swa_lr=0.3, anneal_epochs=2, anneal_strategy=other)
    optimizer.load_state_dict(checkpoint["opt"])
    scheduler.load_state_dict(checkpoint["sched"])
    resumed = _trace(optimizer, scheduler, 8)
    assert first[:-1] + resumed == uninterrupted


def test_swalr_keeps_a_tensor_lr_the_same_tensor_with_torchs_values():
    traces, kept = [], []
    for scheduler_class in (SWALR, torch_swa.SWALR):
        lr = torch.tensor(0.1, dtype=torch.float64)
        optimizer = optimlib.SGD([torch.zeros(2, requires_grad=True)], lr=lr)
        scheduler = scheduler_class(optimizer, swa_lr=0.02, anneal_epochs=5)
        trace = []
        for _ in range(8):
            optimizer.step()
            scheduler.step()
            assert optimizer.param_groups[0]["lr"] is lr
            trace.append(lr.item())
            assert scheduler.get_last_lr()[0] is not lr
        traces.append(trace)
        kept.append(trace[-1])
    assert traces[0] == traces[1]
    assert kept[0] == pytest.approx(0.02, rel=1e-12)


def test_swalr_numpy_rates_match_torch_and_checkpoint_with_weights_only():
    numpy = pytest.importorskip("numpy")
    optimizer = _optimizer("optimlib-sgd")
    scheduler = SWALR(optimizer, swa_lr=numpy.float64(0.01), anneal_epochs=3)
    reference = _optimizer("optimlib-sgd")
    torch_scheduler = torch_swa.SWALR(reference, swa_lr=numpy.float64(0.01), anneal_epochs=3)
    assert _trace(optimizer, scheduler, 5) == _trace(reference, torch_scheduler, 5)
    buffer = io.BytesIO()
    torch.save({"opt": optimizer.state_dict(), "sched": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert type(checkpoint["opt"]["param_groups"][0]["swa_lr"]) is float


def test_swalr_get_lr_outside_step_warns_as_torchs():
    messages = []
    for scheduler_class in (SWALR, torch_swa.SWALR):
        scheduler = scheduler_class(_optimizer("optimlib-sgd"), swa_lr=0.01)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheduler.get_lr()
        messages.append([str(w.message) for w in caught])
    assert messages[0] == messages[1]
    assert len(messages[0]) == 1


def test_swalr_signature_and_defaults_are_torchs():
    for mine, theirs in [
        (SWALR.__init__, torch_swa.SWALR.__init__),
        (AveragedModel.__init__, torch_swa.AveragedModel.__init__),
        (update_bn, torch_swa.update_bn),
        (ours.get_ema_multi_avg_fn, torch_swa.get_ema_multi_avg_fn),
        (ours.get_ema_avg_fn, torch_swa.get_ema_avg_fn),
    ]:
        ours_params = inspect.signature(mine).parameters
        torch_params = inspect.signature(theirs).parameters
        assert [(p.name, p.default, p.kind) for p in ours_params.values()] == [
            (p.name, p.default, p.kind) for p in torch_params.values()
        ]
    assert sorted(ours.__all__) == sorted(torch_swa.__all__)


SWALR_ERRORS = {
    "strategy": {"swa_lr": 0.01, "anneal_strategy": "exp"},
    "negative-epochs": {"swa_lr": 0.01, "anneal_epochs": -1},
    "float-epochs": {"swa_lr": 0.01, "anneal_epochs": 2.0},
    "string-epochs": {"swa_lr": 0.01, "anneal_epochs": "10"},
    "swa_lr-length": {"swa_lr": [0.01, 0.02, 0.03]},
}


@pytest.mark.parametrize("name", SWALR_ERRORS)
def test_swalr_bad_arguments_raise_torchs_errors_and_change_nothing(name):
    errors = []
    for scheduler_class in (torch_swa.SWALR, SWALR):
        optimizer = _optimizer("optimlib-sgd")
        with pytest.raises(ValueError) as caught:
            scheduler_class(optimizer, **SWALR_ERRORS[name])
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    fresh = _optimizer("optimlib-sgd")
    assert [set(g) for g in optimizer.param_groups] == [set(g) for g in fresh.param_groups]
    assert _lrs(optimizer) == _lrs(fresh)


def test_swalr_resuming_without_initial_lr_raises_torchs_error_and_changes_nothing():
    errors = []
    for scheduler_class in (torch_swa.SWALR, SWALR):
        optimizer = _optimizer("optimlib-sgd")
        with pytest.raises(KeyError) as caught:
            scheduler_class(optimizer, swa_lr=0.01, last_epoch=3)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert all("swa_lr" not in group for group in optimizer.param_groups)  # torch leaves it


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"swa_lr": -0.01}, ValueError, r"Invalid swa_lr value: -0.01 \(must be in \[0, inf\)\)"),
        ({"swa_lr": [0.01, math.nan]}, ValueError, r"Invalid swa_lr value: nan"),
        ({"swa_lr": "0.1"}, TypeError, r"Invalid swa_lr: expected a number, got str"),
        ({"swa_lr": 0.01, "anneal_epochs": True}, ValueError, r"got True"),
    ],
    ids=["negative", "nan", "string", "bool-epochs"],
)
def test_swalr_refuses_what_torch_would_run_into_nonsense(kwargs, error, pattern):
    optimizer = _optimizer("optimlib-sgd")
    with pytest.raises(error, match=pattern):
        SWALR(optimizer, **kwargs)
    assert all("swa_lr" not in group for group in optimizer.param_groups)


def test_swalr_refuses_what_is_not_an_optimizer_as_torch():
    for scheduler_class in (torch_swa.SWALR, SWALR):
        with pytest.raises(AttributeError):
            scheduler_class(object(), swa_lr=0.01)


# ---------------------------------------------------------------- update_bn


def _bn_model(device="cpu", momentum=0.1):
    torch.manual_seed(10)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3, momentum=momentum),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12, 4),
        nn.BatchNorm1d(4, momentum=momentum),
        nn.Dropout(0.0),
    ).to(device=device, dtype=torch.float64)


def _bn_loader(with_targets, device="cpu", batches=5):
    generator = torch.Generator().manual_seed(11)
    loader = []
    for size in range(3, 3 + batches):
        x = torch.randn(size, 2, 4, 4, generator=generator, dtype=torch.float64).to(device)
        loader.append((x, torch.zeros(size)) if with_targets else x)
    return loader


def _bn_buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "batches" in k}


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("with_targets", [False, True], ids=["tensors", "pairs"])
def test_update_bn_equals_torchs(with_targets, training, momentum, device):
    loader = _bn_loader(with_targets, device)
    models = [_bn_model(device, momentum), _bn_model(device, momentum)]
    for model, update in zip(models, (update_bn, torch_swa.update_bn), strict=True):
        model.train(training)
        model(_bn_loader(False, device, batches=1)[0])  # some statistics to replace
        update(loader, model)
        assert all(module.training == training for module in model.modules())
        assert [m.momentum for m in (model[1], model[5])] == [momentum, momentum]
    _same_tensors(_bn_buffers(models[0]), _bn_buffers(models[1]))
    assert models[0][1].num_batches_tracked.item() == len(loader)


def test_update_bn_gives_the_average_of_the_batch_statistics():
    model = _bn_model()
    loader = _bn_loader(with_targets=True)
    update_bn(loader, model)
    features = [model[0](x).transpose(0, 1).reshape(3, -1) for x, _ in loader]
    with torch.no_grad():
        mean = torch.stack([f.mean(1) for f in features]).mean(0)
        var = torch.stack([f.var(1, unbiased=True) for f in features]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-12, atol=1e-14)


def test_update_bn_of_an_averaged_model_with_a_dataloader_equals_torchs():
    model = _model()
    generator = torch.Generator().manual_seed(12)
    averaged = [AveragedModel(model), torch_swa.AveragedModel(model)]
    for _ in range(5):
        _train_a_little(model, generator)
        for swa_model in averaged:
            swa_model.update_parameters(model)
    data = torch.utils.data.TensorDataset(torch.randn(20, 3, dtype=torch.float64), torch.ones(20))
    loader = torch.utils.data.DataLoader(data, batch_size=6)
    update_bn(loader, averaged[0], device="cpu")
    torch_swa.update_bn(loader, averaged[1], device="cpu")
    _same_tensors(averaged[0].state_dict(), averaged[1].state_dict())
    assert averaged[0].module[1].num_batches_tracked.item() == 4


def test_update_bn_moves_inputs_to_the_device(device):
    model = _bn_model(device)
    loader = _bn_loader(with_targets=True, device="cpu")
    update_bn(loader, model, device=device)
    reference = _bn_model(device)
    torch_swa.update_bn(loader, reference, device=device)
    _same_tensors(_bn_buffers(model), _bn_buffers(reference))


def test_update_bn_without_batchnorm_leaves_the_model_and_loader_alone():
    class Untouchable:
        def __iter__(self):
            raise AssertionError("the loader was read")

    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)).eval()
    update_bn(Untouchable(), model)
    assert not model.training


def test_update_bn_keeps_each_submodules_own_mode():
    model = _bn_model().train()
    model[5].eval()  # a frozen layer: torch would leave it in training mode
    update_bn(_bn_loader(False), model)
    assert model.training and model[1].training and not model[5].training
    # ... but during the pass every layer was in training mode, as torch has it
    reference = _bn_model().train()
    torch_swa.update_bn(_bn_loader(False), reference)
    _same_tensors(_bn_buffers(model), _bn_buffers(reference))


def test_update_bn_puts_everything_back_when_a_batch_fails():
    model = _bn_model(momentum=0.3).eval()
    model.train()
    model(_bn_loader(False, batches=1)[0])
    model.eval()
    before = copy.deepcopy(_bn_buffers(model))
    loader = [*_bn_loader(False, batches=2), torch.zeros(2, 5, 4, 4, dtype=torch.float64)]
    with pytest.raises(RuntimeError):
        update_bn(loader, model)
    _same_tensors(_bn_buffers(model), before)
    assert not any(module.training for module in model.modules())
    assert model[1].momentum == 0.3


def test_the_module_imports_torch_and_the_standard_library_only():
    tree = ast.parse(inspect.getsource(ours))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "collections", "copy", "itertools", "math", "typing"} | {
        "warnings",
        "torch",
        "optimlib",
    }
