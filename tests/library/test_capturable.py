"""``capturable=True``: counters on the device, and no value read back to the host.

A CUDA graph records the kernels a step launches and replays them; whatever
the step reads on the host (``.item()``, a number-only argument given a device
tensor, an ``if`` on a tensor) is read once, while recording, and then frozen.
torch.optim's nine optimizers with ``capturable`` keep their counters on the
device and compute what depends on them with 0-d tensors; optimlib's do the
same through the helpers of ``optimlib._functional``.

Without a GPU three things are checked on the CPU:

- **The numbers.** Both libraries refuse ``capturable=True`` for CPU tensors;
  with the allowed devices widened to the CPU (a patch of torch.optim's and
  optimlib's lists), optimlib's capturable step equals torch.optim's
  capturable step and optimlib's own for-loop, in float64, over every
  configuration of ``optimizer_cases``. The tolerance is the conformance
  tests' (``info.rtol``): a tensor scale multiplies where the for-loop passes
  ``value=``, and a power of a tensor may round differently from ``**`` on
  numbers, each by about one rounding.
- **No host reads.** Tensors on the ``meta`` device have shapes but no
  values: every way of reading a value raises there. A capturable step runs to
  the end on them, so it reads none; the same step with its counters read as
  numbers fails (the control, which shows the check can fail).
- **Checkpoints** move both ways with torch.optim's capturable step.

On CUDA (skipped here) a step captured into a CUDA graph and replayed equals
eager steps, eager capturable steps run under ``set_sync_debug_mode("error")``,
and recording an optimizer without ``capturable`` raises torch's error.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import io
import warnings
from typing import Any

import pytest
import torch

import optimlib
import optimlib.optimizer
from tests.library.optimizer_cases import ASGD_INFO, OPTIMIZERS, OptimizerInfo
from tests.library.test_fused import Run, _assert_params_close, _assert_states_close, _build

CAPTURABLE = [info for info in OPTIMIZERS if info.ours.supports_capturable]
CASES = [param for info in CAPTURABLE for param in info.config_params()]
#: The algorithms whose update reads the step count (the others only count).
READS_COUNTS = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "ASGD")
STEPS = 10
#: torch.optim's message, which optimlib's error begins with (ASGD lists its scalars too).
CPU_REFUSED = r"If capturable=True, params.* must be on supported devices"


def test_the_capturable_optimizers_are_torchs_nine():
    names = {info.name for info in CAPTURABLE}
    assert names == {"Adam", "AdamW", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam"} | {
        "RMSprop",
        "Rprop",
    }
    for info in OPTIMIZERS:
        if not info.ours.supports_capturable:  # torch's twin has no such argument
            with pytest.raises(TypeError, match="capturable"):
                info.ours([torch.ones(2, requires_grad=True)], capturable=True)


@pytest.fixture
def capturable_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both libraries' capturable steps allowed on the CPU and on ``meta`` too."""
    devices = ["cpu", "meta", *optimlib.optimizer.capturable_device_types()]
    for name in ("adam", "adadelta", "adamax", "asgd", "nadam", "radam", "rmsprop", "rprop"):
        module = importlib.import_module(f"torch.optim.{name}")
        monkeypatch.setattr(module, "_get_capturable_supported_devices", lambda *_, **__: devices)
    monkeypatch.setattr(optimlib.optimizer, "capturable_device_types", lambda: devices)


def _scheduler(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)


def _assert_runs_close(ours: Run, theirs: Run, info: OptimizerInfo) -> None:
    _assert_params_close(ours.params, theirs.params, rtol=info.rtol, atol=info.atol)


def _three_runs(info: OptimizerInfo, config: dict[str, Any]) -> list[tuple[Run, Any]]:
    """optimlib's capturable step, torch.optim's, and optimlib's for-loop, side by side."""
    runs = [
        _build(info, config, "cpu", torch.float64, capturable=True),
        _build(info, config, "cpu", torch.float64, torch_twin=True, capturable=True),
        _build(info, config, "cpu", torch.float64, foreach=False),
    ]
    for run, optimizer in runs:
        run.run(optimizer, range(STEPS), _scheduler(optimizer))
    return runs


@pytest.mark.usefixtures("capturable_anywhere", "float64_default")
@pytest.mark.parametrize(("info", "config"), CASES)
def test_capturable_equals_torchs_capturable_and_the_for_loop(info, config):
    (ours_run, ours), (torch_run, theirs), (loop_run, _) = _three_runs(info, config)
    _assert_runs_close(ours_run, torch_run, info)
    _assert_states_close(ours, theirs, rtol=info.rtol, atol=info.atol)
    if info.torch_foreach_agrees(config):  # torch's capturable foreach, its CUDA default
        options = {**config, "foreach": True, "capturable": True}
        foreach_run, foreach = _build(info, options, "cpu", torch.float64, torch_twin=True)
        foreach_run.run(foreach, range(STEPS), _scheduler(foreach))
        _assert_runs_close(ours_run, foreach_run, info)
    lr = config.get("lr")
    if isinstance(lr, torch.Tensor) and lr.dtype == torch.float32:
        # Both libraries' for-loops compute a float32 lr's step size in float32
        # (a 0-d tensor times a number keeps its dtype); their capturable steps
        # multiply it by a float64 0-d tensor, in float64.
        for a, b in zip(ours_run.params, loop_run.params, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-7, atol=1e-9)
    else:
        _assert_runs_close(ours_run, loop_run, info)


@pytest.mark.usefixtures("capturable_anywhere")
@pytest.mark.parametrize("info", CAPTURABLE, ids=lambda info: info.name)
def test_float32_counters_still_give_the_for_loops_numbers(info):
    """With float32 scalar state, torch.optim's capturable step computes its bias
    corrections (and ASGD's and RAdam's schedules) in float32, about 1e-7 away from
    its for-loop; optimlib's computes them in float64 from the counts, as its
    for-loop does with numbers, and stays with the for-loop."""
    config = max(info.configs, key=len)
    (ours_run, _), (torch_run, _), (loop_run, _) = _three_runs(info, config)
    _assert_runs_close(ours_run, loop_run, info)
    for a, b in zip(ours_run.params, torch_run.params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------ no host reads


def _meta_run(info: OptimizerInfo, config: dict[str, Any], steps: int = 3, **options):
    """Steps on meta tensors; after the first, a tensor ``lr`` is moved there too."""
    run, optimizer = _build(info, config, "meta", torch.float32, **options)
    run.run(optimizer, range(1))
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):  # on a GPU, a tensor rate lives there
            group["lr"] = group["lr"].to("meta")
    run.run(optimizer, range(1, steps))
    return run, optimizer


@pytest.mark.usefixtures("capturable_anywhere")
@pytest.mark.parametrize(("info", "config"), CASES)
def test_a_capturable_step_reads_no_value_on_the_host(info, config):
    run, optimizer = _meta_run(info, config, capturable=True)
    for p in run.params:  # and every scalar it counts with is on the "device"
        for key in optimizer.device_scalar_keys:
            assert optimizer.state[p][key].device.type == "meta", key


@pytest.mark.usefixtures("capturable_anywhere")
@pytest.mark.parametrize(
    "info", [info for info in CAPTURABLE if info.name in READS_COUNTS], ids=lambda i: i.name
)
def test_the_host_read_check_fails_when_counts_are_read_as_numbers(info, monkeypatch):
    """The control: without the tensor arithmetic, the same meta step reads its counters."""
    monkeypatch.setattr(optimlib.optimizer, "device_scalars", contextlib.nullcontext)
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        _meta_run(info, info.configs[0], capturable=True)


@pytest.mark.usefixtures("capturable_anywhere")
def test_asgd_state_mapped_to_the_cpu_moves_back_to_the_device():
    """A checkpoint loaded with map_location="cpu" leaves ASGD's scalars on the CPU,
    where a captured step would read them once; a capturable step moves them."""
    run, optimizer = _meta_run(ASGD_INFO, ASGD_INFO.configs[0], steps=1, capturable=True)
    for state in optimizer.state.values():
        for key in ("eta", "mu", "step"):
            state[key] = torch.ones((), dtype=state[key].dtype)
    run.run(optimizer, range(1, 3))
    for state in optimizer.state.values():
        assert {state[key].device.type for key in ("eta", "mu", "step")} == {"meta"}


@pytest.mark.usefixtures("capturable_anywhere")
@pytest.mark.parametrize(
    "info",
    [info for info in CAPTURABLE if info.name != "ASGD"],  # ASGD's, as torch's, stay on the device
    ids=lambda info: info.name,
)
def test_counters_move_to_the_device_when_capturable_is_switched_on(info):
    run, optimizer = _build(info, info.configs[0], "meta", torch.float32)
    run.run(optimizer, range(2))
    assert {optimizer.state[p]["step"].device.type for p in run.params} == {"cpu"}
    for group in optimizer.param_groups:
        group["capturable"] = True
    run.run(optimizer, range(2, 5))
    for p in run.params:
        for key in ("step", *optimizer.counter_keys):
            assert optimizer.state[p][key].device.type == "meta", key


# ------------------------------------------------------------ refusals


@pytest.mark.parametrize("info", CAPTURABLE, ids=lambda info: info.name)
def test_cpu_tensors_are_refused_as_torch_refuses_them_before_anything_changes(info):
    for cls in (info.ours, info.theirs):
        run = Run("cpu", torch.float32)
        optimizer = cls(run.groups(info), **copy.deepcopy(info.configs[0]), capturable=True)
        run.gradients(0)
        before = [p.detach().clone() for p in run.params]
        with pytest.raises(AssertionError, match=CPU_REFUSED):
            optimizer.step()
        if cls is info.ours:  # torch.optim may have updated earlier tensors already
            for p, old in zip(run.params, before, strict=True):
                assert torch.equal(p.detach(), old)
            assert not optimizer.state


@pytest.mark.parametrize("value", ["True", 2, 0.5])
def test_capturable_is_a_switch(value):
    with pytest.raises(TypeError, match="Invalid capturable"):
        optimlib.Adam([torch.ones(2, requires_grad=True)], capturable=value)


# ------------------------------------------------------------ checkpoints


def _resumed(cls: type, info: OptimizerInfo, config: dict[str, Any], checkpoint: bytes) -> Run:
    """A run that loads ``checkpoint`` (saved after 4 steps) and takes the rest of the steps."""
    run = Run("cpu", torch.float64)
    optimizer = cls(run.groups(info), **copy.deepcopy(config), capturable=True)
    saved = torch.load(io.BytesIO(checkpoint), weights_only=True)
    with torch.no_grad():  # the parameters as they were when saved
        for p, value in zip(run.params, saved["params"], strict=True):
            p.copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    run.run(optimizer, range(4, STEPS))
    return run


def _checkpoint(cls: type, info: OptimizerInfo, config: dict[str, Any]) -> tuple[bytes, Run]:
    """4 steps, saved; then the rest of the steps, uninterrupted."""
    run = Run("cpu", torch.float64)
    optimizer = cls(run.groups(info), **copy.deepcopy(config), capturable=True)
    run.run(optimizer, range(4))
    buffer = io.BytesIO()
    params = [p.detach().clone() for p in run.params]
    torch.save({"params": params, "optimizer": optimizer.state_dict()}, buffer)
    run.run(optimizer, range(4, STEPS))
    return buffer.getvalue(), run


@pytest.mark.usefixtures("capturable_anywhere", "float64_default")
@pytest.mark.parametrize("info", CAPTURABLE, ids=lambda info: info.name)
def test_checkpoints_resume_exactly_and_load_both_ways_with_torchs_capturable(info):
    """Each library resumes the other's checkpoint as it resumes its own.

    torch.optim's ``load_state_dict`` gives a capturable group float32 counters
    (whatever the default dtype), so torch's own resumed run is not its
    uninterrupted one; optimlib computes from the counts in float64, and its
    resumed run is.
    """
    config = max(info.configs, key=len)
    ours_checkpoint, ours_uninterrupted = _checkpoint(info.ours, info, config)
    torch_checkpoint, _ = _checkpoint(info.theirs, info, config)
    for loader in (info.ours, info.theirs):
        from_ours = _resumed(loader, info, config, ours_checkpoint)
        from_torch = _resumed(loader, info, config, torch_checkpoint)
        _assert_runs_close(from_ours, from_torch, info)
    resumed = _resumed(info.ours, info, config, ours_checkpoint)
    _assert_params_close(resumed.params, ours_uninterrupted.params, rtol=0, atol=0)


# ------------------------------------------------------------ CUDA graphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _cuda_run(info: OptimizerInfo, config: dict[str, Any], **options):
    run, optimizer = _build(info, config, "cuda", torch.float32, **options)
    for p in run.params:  # gradients that the graph reads from fixed addresses
        p.grad = torch.zeros_like(p)
    return run, optimizer


def _fill_gradients(run: Run, step: int) -> None:
    for index, p in enumerate(run.params):
        p.grad.copy_(torch.sin(p.detach() + step + index) + 0.1 * p.detach())


def _tensor_lr(info: OptimizerInfo, config: dict[str, Any]) -> dict[str, Any]:
    """A CUDA tensor lr: a number, or a CPU tensor, would be frozen into the graph."""
    lr = config.get("lr", inspect.signature(info.ours).parameters["lr"].default)
    return {**config, "lr": torch.tensor(float(lr), device="cuda")}


@cuda
@pytest.mark.parametrize(
    ("info", "fused"),
    [pytest.param(info, False, id=info.name) for info in CAPTURABLE]
    + [
        pytest.param(info, True, id=f"{info.name}-fused")
        for info in CAPTURABLE
        if info.name in ("Adam", "AdamW")  # torch's fused kernels read counters on the device
    ],
)
def test_a_step_captured_in_a_cuda_graph_replays_as_eager_steps(info, fused):
    config = max(info.configs, key=len)
    config = _tensor_lr(info, {key: v for key, v in config.items() if key != "foreach"})
    eager_run, eager = _cuda_run(info, config, foreach=False)
    options = {"fused": True} if fused else {}
    graph_run, graphed = _cuda_run(info, config, capturable=True, **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable=True can impair")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream creates the state
            for step in range(3):
                _fill_gradients(graph_run, step)
                graphed.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graphed.step()
    for step in range(3):
        _fill_gradients(eager_run, step)
        eager.step()
    for step in range(3, 3 + STEPS):
        _fill_gradients(graph_run, step)
        graph.replay()
        _fill_gradients(eager_run, step)
        eager.step()
        if step % 4 == 0:  # an lr changed in place reaches the replays
            graphed.param_groups[0]["lr"].mul_(0.5)
            eager.param_groups[0]["lr"].mul_(0.5)
    torch.cuda.synchronize()
    for a, b in zip(graph_run.params, eager_run.params, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.parametrize(("info", "config"), CASES)
def test_eager_capturable_steps_never_synchronise(info, config):
    run, optimizer = _cuda_run(info, _tensor_lr(info, config), capturable=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*capturable=True can impair")
        _fill_gradients(run, 0)
        optimizer.step()  # creates the state: copies from the host
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(1, 4):
                _fill_gradients(run, step)
                optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for p in run.params:
        state = optimizer.state[p]
        assert state["step"].device == p.device


@cuda
@pytest.mark.parametrize("info", CAPTURABLE, ids=lambda info: info.name)
def test_recording_a_step_without_capturable_is_refused_as_torch_refuses_it(info):
    for cls in (info.ours, info.theirs):
        run = Run("cuda", torch.float32)
        optimizer = cls(run.groups(info), **copy.deepcopy(info.configs[0]))
        run.gradients(0)
        optimizer.step()
        graph = torch.cuda.CUDAGraph()
        with pytest.raises(RuntimeError, match="capturable is False"):
            with torch.cuda.graph(graph):
                optimizer.step()
