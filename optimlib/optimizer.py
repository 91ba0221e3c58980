"""The base class of optimlib's optimizers.

``torch.optim.Optimizer`` already keeps parameter groups, per-parameter state,
``zero_grad``, ``state_dict`` and hooks; Chapter 2 of the book rebuilds it from
scratch. What every optimlib algorithm adds on top is the same each time, so
it lives here once:

- the step loop: the closure evaluated with gradients enabled, every group
  checked before any is updated, parameters without a gradient skipped;
- per-parameter state created lazily from the class's declaration
  (``Optimizer.state_spec``);
- the choice between the for-loop and the foreach implementation, made in one
  place (:func:`optimlib._foreach.use_foreach`), with the foreach one called
  once per bucket of one device and one dtype;
- each group's hyperparameters forwarded, by name, to the implementation;
- ``capturable=True`` for the classes that declare ``supports_capturable``:
  counters kept on the device, and the for-loop run with its counts as 0-d
  tensors (``optimlib._functional.device_scalars``), so that the step reads
  nothing back to the host and can be recorded in a CUDA graph.

An algorithm is then its maths (the class docstring), its constructor (the
argument checks), its state declaration, and two functions with the same
signature: a readable for-loop and a multi-tensor (foreach) twin::

    def adam_for_loop(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                      *, lr, betas, eps, weight_decay, amsgrad, ...): ...

    class Adam(Optimizer):
        state_spec = spec(exp_avg=zeros(), exp_avg_sq=zeros(),
                          max_exp_avg_sq=zeros(when="amsgrad"), step=counter())
        for_loop_update, foreach_update = adam_for_loop, adam_foreach

The functions take the parameters, their gradients, then one list per state
entry in the order of ``state_spec``; their keyword-only arguments are read
from the parameter group under the same names. Where torch has a fused kernel
(Adam, AdamW, SGD, Adagrad), a third function, ``fused_update``, runs it for
``fused=True`` (``optimlib._fused``).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast, overload

import torch
from torch import Tensor
from torch.optim.optimizer import _get_capturable_supported_devices

from optimlib._foreach import group_by_device_and_dtype, use_foreach
from optimlib._functional import device_scalars, new_counter, scalar_dtype
from optimlib._fused import check_fused_options, check_fused_params
from optimlib._validation import check_bool, check_foreach, check_implemented, check_params

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
#: An update implementation: ``(params, grads, *state_lists, **hyperparameters)``.
UpdateFn = Callable[..., None]
#: A state list whose entries exist only under an option (``amsgrad``, ``momentum``)
#: or after a first step, and are ``None`` otherwise.
OptionalStates = list[Any]


def to_scalar(value: Any) -> Any:
    """A hyperparameter as ``torch.optim`` computes with it.

    A one-element tensor (an ``lr`` that a scheduler updates in place, say)
    becomes a 0-d tensor, so values derived from it round in its dtype exactly
    as they do in ``torch.optim``; kernels receive them through ``float()``.
    Tuples (``betas``) are converted element by element; anything else is
    returned as it is.
    """
    if isinstance(value, Tensor):
        return value.squeeze()
    if isinstance(value, tuple):
        return tuple(to_scalar(element) for element in value)
    return value


def defaults_from(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's arguments, less ``self`` and ``params``: the groups' defaults.

    Call it as ``defaults_from(locals())`` from the constructor; local names
    the constructor binds itself are left out, so only its arguments count.
    """
    frame = inspect.currentframe()
    caller = frame.f_back.f_code if frame is not None and frame.f_back is not None else None
    if caller is None:
        names: tuple[str, ...] = tuple(arguments)
    else:
        names = caller.co_varnames[: caller.co_argcount + caller.co_kwonlyargcount]
    return {name: arguments[name] for name in names if name not in ("self", "params")}


@dataclass(frozen=True)
class State:
    """How one entry of a parameter's state begins.

    ``create(param, group)`` makes the initial tensor; ``None`` means the update
    creates the entry itself (SGD's momentum buffer starts as a copy of the
    first direction), and what it leaves in its list is stored. ``when`` names
    a group option: the entry exists only where that option is truthy
    (``"amsgrad"``). ``scalar`` marks 0-d state kept in the scalar dtype
    (float32) whatever the parameter's dtype, as ``torch.optim`` keeps it;
    ``counter`` marks one that :func:`counter` made, kept where the group's
    update reads it.
    """

    create: Callable[[Tensor, dict[str, Any]], Tensor] | None
    when: str | None = None
    scalar: bool = False
    counter: bool = False


def spec(**entries: State) -> Mapping[str, State]:
    """A state declaration: each entry's name and how it begins, in the update's order."""
    return entries


def zeros(when: str | None = None) -> State:
    """A tensor of zeros shaped like the parameter (moments, buffers)."""
    return State(lambda param, group: torch.zeros_like(param), when)


def filled(option: str, when: str | None = None) -> State:
    """A tensor shaped like the parameter, filled with the group's ``option``.

    For a complex parameter both the real and the imaginary part are filled,
    since the update treats them as two real coordinates.
    """

    def create(param: Tensor, group: dict[str, Any]) -> Tensor:
        value = to_scalar(group[option])
        if param.is_complex():
            value = complex(float(value), float(value))
        return torch.full_like(param, value)

    return State(create, when)


def counter(start: float = 0.0) -> State:
    """A 0-d counter on the CPU (a step count, a running product), as torch.optim keeps it.

    A group with ``fused=True`` keeps it in float32 on the parameter's device
    instead, where the fused kernels read it, and one with ``capturable=True``
    on the device in the scalar dtype, where the update computes with it
    (torch.optim does the same).
    """

    def create(param: Tensor, group: dict[str, Any]) -> Tensor:
        if group.get("fused"):
            return torch.full((), start, dtype=torch.float32, device=param.device)
        if group.get("capturable"):
            return new_counter(start, device=param.device)
        return new_counter(start)

    return State(create, scalar=True, counter=True)


def scalar_on_device(start: float | str) -> State:
    """A 0-d scalar on the parameter's device, starting at a number or at a group option."""

    def create(param: Tensor, group: dict[str, Any]) -> Tensor:
        value = to_scalar(group[start]) if isinstance(start, str) else start
        return torch.as_tensor(value, dtype=scalar_dtype(), device=param.device).clone()

    return State(create, scalar=True)


def created_by_update(when: str | None = None) -> State:
    """An entry the update creates on its first step (see :class:`State`)."""
    return State(None, when)


class Optimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` plus the step loop every optimlib algorithm shares."""

    #: The state of each parameter, in the order the update functions take it.
    state_spec: ClassVar[Mapping[str, State]] = {}
    #: The reference implementation, and its multi-tensor twin (``None``: none).
    for_loop_update: ClassVar[UpdateFn | None] = None
    foreach_update: ClassVar[UpdateFn | None] = None
    #: The ``fused=True`` implementation (``None``: none, and ``fused=True`` is
    #: refused): the for-loop's signature plus ``grad_scale`` and ``found_inf``
    #: (see ``optimlib._fused``).
    fused_update: ClassVar[UpdateFn | None] = None
    #: Whether ``capturable=True`` is implemented (for torch.optim's nine that have it):
    #: counters then stay on the device, and the step reads nothing back to the host.
    supports_capturable: ClassVar[bool] = False
    #: Whether the fused update applies GradScaler's ``grad_scale``/``found_inf`` itself.
    #: An optimizer whose step changes something before any update (schedule-free
    #: AdamW's clocks) says no, and GradScaler then unscales and skips for it.
    fused_skips_overflowed_steps: ClassVar[bool] = True
    #: torch's error for a sparse gradient under ``fused=True``, where the
    #: for-loop takes sparse gradients.
    fused_sparse_gradient_error: ClassVar[str] = "`fused` does not support sparse gradients"
    #: Whether the update is written for complex tensors (SGD's is, as is). If
    #: not, a complex parameter, its gradient and its complex state are viewed
    #: as real pairs (``torch.view_as_real``), as torch.optim does: the update
    #: then treats the real and imaginary parts as two real coordinates.
    supports_complex: ClassVar[bool] = False
    #: Whether the update handles sparse gradients (SGD's and Adagrad's do).
    supports_sparse: ClassVar[bool] = False
    #: The error for a sparse gradient otherwise; ``None``: "<class> does not support ...".
    sparse_gradient_error: ClassVar[str | None] = None
    #: Whether every parameter's state is created at construction, as torch.optim.Adagrad does.
    creates_state_eagerly: ClassVar[bool] = False
    #: Hyperparameters a differentiable step may differentiate through, when given
    #: as tensors that require grad (the update then avoids number-only arguments).
    learnable_hyperparameters: ClassVar[tuple[str, ...]] = ("weight_decay",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # staticmethod, so that an update function set in the class body is not bound.
        for name in ("for_loop_update", "foreach_update", "fused_update"):
            function = cls.__dict__.get(name)
            if function is not None and not isinstance(function, staticmethod):
                setattr(cls, name, staticmethod(function))
                _check_signature(cls, function)
                _keyword_names(function)

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        check_foreach(defaults.get("foreach"))
        implemented = ("fused",) * bool(self.fused_update)
        implemented += ("capturable",) * self.supports_capturable
        check_implemented(type(self).__name__, defaults, implemented=implemented)
        if defaults.get("capturable") is not None:
            check_bool("capturable", defaults["capturable"])
        if "differentiable" in defaults:
            check_bool("differentiable", defaults["differentiable"])
        if defaults.get("foreach") and self.for_loop_update and not self.foreach_update:
            raise ValueError(
                f"Invalid foreach=True: optimlib.{type(self).__name__} has no foreach "
                "implementation (use foreach=None or False)"
            )
        if not defaults.get("fused") and getattr(self.fused_update, "compiles_for_loop", False):
            # torch's twin has no fused option: its groups, and so ours, lack the key.
            defaults = {name: value for name, value in defaults.items() if name != "fused"}
        super().__init__(check_params(params), defaults)
        check_fused_options(defaults)
        if defaults.get("fused") and self.fused_skips_overflowed_steps:
            # torch.amp.GradScaler then leaves unscaling and skipping to the step.
            self._step_supports_amp_scaling = True
        # The options this optimizer has, for upgrading older checkpoints (torch's
        # own __setstate__ adds "differentiable" to defaults, which LBFGS lacks).
        self._option_names = tuple(defaults)
        if self.creates_state_eagerly:
            for group in self.param_groups:
                self.states(group["params"], group)

    @property
    def counter_keys(self) -> tuple[str, ...]:
        """The state made by :func:`counter`, kept where the group's update reads it."""
        return tuple(k for k, spec in self.state_spec.items() if spec.counter)

    @property
    def device_scalar_keys(self) -> tuple[str, ...]:
        """The 0-d state a fused or capturable step reads on the parameters' device.

        The counters, and the scalars kept on the device anyway (ASGD's ``eta``,
        ``mu`` and ``step``), which a checkpoint mapped to the CPU may have moved.
        """
        return tuple(k for k, spec in self.state_spec.items() if spec.scalar)

    @property
    def scalar_state_keys(self) -> tuple[str, ...]:
        """0-d state restored to the scalar dtype on load (``step`` is never cast)."""
        return tuple(k for k, spec in self.state_spec.items() if spec.scalar and k != "step")

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one optimization step.

        Args:
            closure: optional; re-evaluates the model, calls ``backward()`` and
                returns the loss. It runs with gradients enabled, before the
                update, and its loss is returned.

        The update runs without recording gradients, unless the optimizer was
        built with ``differentiable=True``: then autograd records it, so that
        a loss after the step can be differentiated through the step
        (with respect to the parameters before it, their gradients, the state,
        or a tensor hyperparameter), as with ``torch.optim``. A differentiable
        step always runs the for-loop, the implementation written for autograd
        (torch.optim runs its foreach SGD, and refuses the others' at step time).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        differentiable = bool(self.defaults.get("differentiable", False))
        if self.supports_capturable:
            # torch.optim's own check: recording a step of a group without
            # capturable=True, which reads values on the host, raises.
            self._accelerator_graph_capture_health_check()
        with torch.set_grad_enabled(differentiable):
            work = []
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                self.check_group(group, params)
                if params:
                    work.append((group, params))
            shared = self.step_values()
            for group, params in work:
                grads = [p.grad for p in params]
                foreach = use_foreach(group.get("foreach"), params, grads) and not (
                    differentiable or _has_duplicates(params)
                )
                options = {**group, **shared} if shared else group
                self.update_group(options, params, grads, foreach=foreach)
        return loss

    def check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Raise before anything changes if this group cannot be updated.

        The step checks every group first and updates afterwards, so an error
        in one group leaves all of them, and all state, as they were.
        """
        # Under torch.compile, Dynamo shows every group that has the key with
        # capturable=True (on a GPU it sets it too, while no state exists), as
        # it does for torch.optim's: the step then computes with tensor counts,
        # and the device check below is left to the compiler, as in torch.
        if "fused" in self.defaults and group.get("fused"):
            self._check_fused_group(group, params)
        elif any(getattr(self, name, None) is not None for name in _AMP_ARGUMENTS):
            raise RuntimeError(
                f"optimlib.{type(self).__name__}: a GradScaler's grad_scale and found_inf "
                "can only be applied by a group with fused=True"
            )
        if not self.supports_sparse and any(
            p.grad is not None and p.grad.is_sparse for p in params
        ):
            raise RuntimeError(
                self.sparse_gradient_error
                or f"{type(self).__name__} does not support sparse gradients"
            )
        if not self.supports_complex and any(
            p.is_complex() and p.grad is not None and p.grad.is_sparse for p in params
        ):
            raise RuntimeError(
                f"optimlib.{type(self).__name__} does not support sparse gradients of complex "
                "parameters: it updates a complex parameter as real pairs, and torch.optim "
                "squares a sparse gradient's complex values instead; use a dense gradient"
            )
        if self.defaults.get("differentiable"):
            self._check_differentiable_group(group, params)
        if self.supports_capturable and group.get("capturable"):
            _check_capturable_devices(params)

    def _check_fused_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """torch's rules for a fused step (checked again: a group can switch fused on)."""
        name = type(self).__name__
        if self.fused_update is None:
            check_implemented(name, {"fused": group.get("fused")})
        check_fused_options({**group, "differentiable": self.defaults.get("differentiable")})
        check_fused_params(params)
        if self.supports_sparse and any(p.grad is not None and p.grad.is_sparse for p in params):
            raise RuntimeError(self.fused_sparse_gradient_error)

    def _check_differentiable_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if any(p.is_leaf and p.requires_grad for p in params):
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation: "
                "differentiable=True updates the parameters in place, with autograd "
                "recording, so optimize non-leaf tensors (param.clone(), say)"
            )
        for name, value in group.items():
            values = value if isinstance(value, tuple) else (value,)
            learned = any(isinstance(v, Tensor) and v.requires_grad for v in values)
            if learned and name not in self.learnable_hyperparameters:
                allowed = ", ".join(self.learnable_hyperparameters) or "none"
                raise TypeError(
                    f"Invalid {name}: optimlib.{type(self).__name__} cannot differentiate "
                    f"through {name} (a tensor that requires grad); it can through: {allowed}"
                )

    def step_values(self) -> dict[str, Any]:
        """Values drawn once per step and given to every group's update (none by default)."""
        return {}

    def hyperparameters(self, group: dict[str, Any], update: UpdateFn) -> dict[str, Any]:
        """The keyword arguments of ``update``, read from ``group`` under the same names.

        Outside a differentiable step, a tensor that requires grad is detached:
        it is just a number there, and kernels refuse it otherwise.
        """
        names = (name for name in _keyword_names(update) if name not in _AMP_ARGUMENTS)
        values = {name: to_scalar(group[name]) for name in names}
        if not torch.is_grad_enabled():
            values = {name: _detached(value) for name, value in values.items()}
        return values

    def update_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], *, foreach: bool
    ) -> None:
        """Update the ``params`` of one group (those with a gradient) in place."""
        if self.for_loop_update is None:
            raise NotImplementedError(
                f"{type(self).__name__} declares no for_loop_update; set it (and "
                "foreach_update) in the class body, or override update_group"
            )
        fused = bool(group.get("fused")) and self.fused_update is not None
        capturable = bool(group.get("capturable")) and self.supports_capturable
        if capturable and torch.compiler.is_compiling() and not _COMPILER_KEEPS_TENSOR_COUNTS:
            capturable = False  # torch 2.13's compiler gets the tensor counts wrong
        states = self.states(params, group)
        if self.fused_update is not None or capturable:
            keys = self.device_scalar_keys if fused or capturable else self.counter_keys
            _place_counters(params, states, keys, fused=fused, capturable=capturable)
        if torch.is_grad_enabled():  # differentiable=True
            _keep_earlier_state(states)
        state_lists: list[list[Any]] = [
            [state.get(key) for state in states] for key in self.state_spec
        ]
        owners = params  # the parameters as the state knows them
        complex_positions = (
            [] if self.supports_complex else [i for i, p in enumerate(params) if p.is_complex()]
        )
        if complex_positions:
            params, grads = list(params), list(grads)
            for i in complex_positions:
                params[i], grads[i] = _as_real(params[i]), _as_real(grads[i])
                for values in state_lists:
                    values[i] = _as_real(values[i])
        if fused and self.fused_update is not None:
            update = self.fused_update
            amp = {name: getattr(self, name, None) for name in _AMP_ARGUMENTS}
            with device_scalars() if capturable else contextlib.nullcontext():
                update(params, grads, *state_lists, **amp, **self.hyperparameters(group, update))
        elif capturable:
            # The for-loop, with the counts as tensors on the device: optimlib's
            # foreach updates pass their scales to the kernels as host numbers.
            # (torch.optim's capturable foreach passes tensor lists instead; on a
            # GPU the for-loop launches a kernel per operation and tensor.)
            update = self.for_loop_update
            with device_scalars():
                update(params, grads, *state_lists, **self.hyperparameters(group, update))
        elif foreach and self.foreach_update is not None:
            update = self.foreach_update
            kwargs = self.hyperparameters(group, update)
            overridden = type(self).bucket_key is not Optimizer.bucket_key
            buckets = group_by_device_and_dtype(
                [params, cast(list[Any], grads), *state_lists],
                self.bucket_key if overridden else None,
            )
            created = [k for k, spec in enumerate(self.state_spec.values()) if spec.create is None]
            for indices, (bucket_params, bucket_grads, *bucket_state) in buckets:
                update(bucket_params, bucket_grads, *bucket_state, **kwargs)
                for k in created:  # what the update created in its bucket's lists
                    for index, value in zip(indices, bucket_state[k], strict=True):
                        state_lists[k][index] = value
        else:
            update = self.for_loop_update
            update(params, grads, *state_lists, **self.hyperparameters(group, update))
        for (key, spec), values in zip(self.state_spec.items(), state_lists, strict=True):
            if spec.create is None:
                for i, value in enumerate(values):
                    if value is None:
                        continue
                    if i in complex_positions:  # stored in the parameter's own dtype
                        value = torch.view_as_complex(value)
                    self.state[owners[i]][key] = value

    def bucket_key(self, param: Tensor) -> Hashable:
        """Beyond device and dtype, what splits the foreach buckets (nothing by default)."""
        return None

    def states(self, params: Iterable[Tensor], group: dict[str, Any]) -> list[dict[str, Any]]:
        """Each parameter's state, with every entry of ``state_spec`` it lacks created.

        An entry is created the first time it is needed: at the first step, or
        later when an option such as ``amsgrad`` is switched on mid-run. A
        parameter with nothing to keep (plain SGD) gets no state at all.
        """
        wanted = [
            (key, spec.create)
            for key, spec in self.state_spec.items()
            if spec.create is not None and (spec.when is None or bool(group.get(spec.when)))
        ]
        states: list[dict[str, Any]] = []
        for param in params:
            state = self.state.get(param)  # .get: the defaultdict creates nothing
            if state is None:
                if not wanted:
                    states.append({})
                    continue
                state = self.state[param] = {}
            for key, create in wanted:
                if key not in state:
                    state[key] = create(param, group)
            states.append(state)
        return states

    def __getstate__(self) -> dict[str, Any]:
        # torch keeps defaults, state and param_groups; a copy also needs the
        # option names, or _upgrade_loaded_state would give it torch's extras.
        return {**super().__getstate__(), "_option_names": self._option_names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._upgrade_loaded_state()

    def _upgrade_loaded_state(self) -> None:
        """What older checkpoints lack: options added since, and ``step`` as a tensor.

        torch.optim's own optimizers do the same in their ``__setstate__``: a
        group gets the default of an option it was saved without, and a step
        count saved as a Python number becomes a counter tensor again.
        """
        step_spec = self.state_spec.get("step")
        names = getattr(self, "_option_names", tuple(self.defaults))
        for group in self.param_groups:
            for name in names:
                group.setdefault(name, self.defaults[name])
            if step_spec is None or step_spec.create is None:
                continue
            for param in group["params"]:
                state = self.state.get(param)
                if isinstance(state, dict) and not isinstance(state.get("step", 0.0), Tensor):
                    state["step"] = step_spec.create(param, group).fill_(float(state["step"]))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint, keeping scalar state in its own dtype.

        ``torch.optim.Optimizer.load_state_dict`` casts every floating-point
        state tensor except ``step`` to its parameter's dtype; scalar state that
        runs in float32 is cast back, so a resumed run continues bit for bit.
        A group saved before an option existed (by an older torch, say) gets
        that option's default, as ``torch.optim``'s ``__setstate__`` gives it.
        """
        super().load_state_dict(state_dict)  # which calls __setstate__
        keys = self.scalar_state_keys
        for state in self.state.values():
            if not isinstance(state, dict):
                continue
            for key in keys:
                if isinstance(state.get(key), Tensor):
                    state[key] = state[key].to(scalar_dtype())


#: Whether torch.compile may trace a step whose counts are 0-d tensors. Dynamo
#: shows every group as capturable, so a compiled step takes that path unless
#: told otherwise; torch 2.13's compiler gives it wrong numbers (4% off for Adam
#: after four steps), and takes the numbers path there, with graph breaks.
_COMPILER_KEEPS_TENSOR_COUNTS = torch.torch_version.TorchVersion(torch.__version__) >= "2.14"

#: What torch.amp.GradScaler sets on an optimizer with ``_step_supports_amp_scaling``
#: for its step to read, and a fused update takes.
_AMP_ARGUMENTS = ("grad_scale", "found_inf")


def _place_counters(
    params: list[Tensor],
    states: list[dict[str, Any]],
    keys: tuple[str, ...],
    *,
    fused: bool,
    capturable: bool,
) -> None:
    """0-d state (``step``, NAdam's ``mu_product``) where the group's update reads it.

    A fused or capturable step reads ``keys`` on the parameters' devices, a
    fused one its ``step`` in float32, a capturable one in the dtype it has
    (the scalar dtype as created, float32 as torch.optim's ``load_state_dict``
    leaves it); the for-loop and foreach paths read the counters (``keys``)
    as numbers from the CPU, where :func:`counter` creates them. This moves
    those of a group that switched ``fused`` or ``capturable`` on or off after
    its first steps, or loaded a checkpoint mapped elsewhere, as torch.optim's
    ``load_state_dict`` moves ``step`` for such a group.
    """
    on_device = fused or capturable
    for param, state in zip(params, states, strict=True):
        for key in keys:
            value = state.get(key)
            if not isinstance(value, Tensor):
                continue
            if on_device:
                as_float32 = (fused and key == "step") or not value.is_floating_point()
                dtype = torch.float32 if as_float32 else value.dtype
                if value.dtype is not dtype or value.device != param.device:
                    state[key] = value.to(device=param.device, dtype=dtype)
            elif value.dtype is not scalar_dtype() or not value.is_cpu:
                state[key] = value.to(device="cpu", dtype=scalar_dtype())


def capturable_device_types() -> list[str]:
    """The device types where ``capturable=True`` may be used: torch.optim's list."""
    return _get_capturable_supported_devices()


def _check_capturable_devices(params: list[Tensor]) -> None:
    """torch.optim's rule for a capturable step, raised before anything changes."""
    if torch.compiler.is_compiling():  # the compiler decides on graphs itself, as in torch
        return
    allowed = capturable_device_types()
    for param in params:
        if param.device.type not in allowed:
            raise AssertionError(
                f"If capturable=True, params and state_steps must be on supported devices: "
                f"{allowed}. (optimlib got a parameter on {param.device.type}; use "
                "capturable=False there)"
            )


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor) and value.requires_grad:
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(element) for element in value)
    return value


def _has_duplicates(params: list[Tensor]) -> bool:
    """A parameter listed twice in a group (torch warns, and updates it twice in turn).

    Its updates must then run one after the other, as the for-loop runs them;
    the multi-tensor kernels would apply both halves of the update at once.
    """
    return len({id(p) for p in params}) != len(params)


def _as_real(value: Any) -> Any:
    """A complex tensor as a real view with a trailing dimension of 2; anything else as is."""
    if isinstance(value, Tensor) and value.is_complex():
        return torch.view_as_real(value)
    return value


def _keep_earlier_state(states: list[dict[str, Any]]) -> None:
    """Give a differentiable step fresh state tensors to update in place.

    The graph of an earlier differentiable step may hold on to the state
    tensors it used (Adam's ``exp_avg``, say); updating those same tensors in
    place would invalidate it. Cloning is the identity for gradients, so
    derivatives through several steps stay exact.
    """
    for state in states:
        for key, value in state.items():
            if isinstance(value, Tensor):
                state[key] = value.clone()


#: The keyword-only argument names of each update function, read once.
_KEYWORD_NAMES: dict[UpdateFn, tuple[str, ...]] = {}


def _keyword_names(update: UpdateFn) -> tuple[str, ...]:
    names = _KEYWORD_NAMES.get(update)
    if names is None:
        parameters = inspect.signature(update).parameters.values()
        names = tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
        _KEYWORD_NAMES[update] = names
    return names


def _check_signature(cls: type[Optimizer], update: UpdateFn) -> None:
    """An update takes params, grads and one list per state entry, positionally."""
    positional = [
        p
        for p in inspect.signature(update).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    expected = 2 + len(cls.state_spec)
    if len(positional) != expected:
        raise TypeError(
            f"{cls.__name__}: {update.__name__} takes {len(positional)} positional arguments, "
            f"but params, grads and the {len(cls.state_spec)} entries of state_spec make "
            f"{expected}"
        )
