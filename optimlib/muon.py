r"""Muon: momentum whose update matrix is orthogonalized (Jordan et al., 2024).

Two parts: :class:`Muon`, a drop-in twin of :class:`torch.optim.Muon` that
also works on FSDP2's sharded parameters, and :func:`~optimlib.muon.muon_and_adamw`, which
splits a model's parameters between Muon (the hidden weight matrices) and
AdamW (everything else), as Muon is meant to be used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from optimlib._foreach import is_dtensor
from optimlib._functional import decay_weights, update_average
from optimlib._validation import _as_number, check_bool, check_integer, check_non_negative
from optimlib.adam import AdamW
from optimlib.optimizer import Optimizer, ParamsT, UpdateFn, defaults_from, spec, zeros
from optimlib.param_groups import weight_decay_groups

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

#: The quintic Newton-Schulz coefficients (a, b, c) of Keller Jordan's Muon, torch's default.
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_NS_STEPS = 5
#: The floor of the Frobenius norm that the update is divided by, torch's default ``eps``.
DEFAULT_EPS = 1e-7
#: The learning-rate adjustments torch.optim.Muon offers (``None`` means "original").
ADJUST_LR_FNS = ("original", "match_rms_adamw", "spectral_unclamped")


def orthogonalize(matrix: Tensor, coefficients: Sequence[float], steps: int, eps: float) -> Tensor:
    r"""The Newton-Schulz approximation of :math:`UV^\top`, where :math:`U S V^\top` = ``matrix``.

    In bfloat16, as torch.optim.Muon computes it. The matrix is divided by its
    Frobenius norm (at least ``eps``), which bounds its spectral norm by 1;
    each step then applies the odd quintic
    :math:`X \leftarrow aX + (bA + cA^2)X` with :math:`A = XX^\top`, which
    pushes every singular value towards 1 while keeping the singular vectors.
    The coefficients are tuned for speed, not convergence: the singular values
    end up spread around 1 (roughly between 0.5 and 1.5, says Jordan), which
    trains as well as :math:`UV^\top` would. A tall matrix is iterated as its
    transpose, so that :math:`A` is the smaller Gram matrix. Returns a new
    bfloat16 tensor; ``matrix`` is never changed.
    """
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    # copy=True: for a bfloat16 input, .bfloat16() would return the input itself.
    x = matrix.to(torch.bfloat16, copy=True)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # bA + cA²
        x = torch.addmm(x, polynomial, x, beta=a)  # aX + (bA + cA²)X
    return x.T if tall else x


def adjusted_lr(lr: Any, adjust_lr_fn: str | None, shape: Sequence[int]) -> Any:
    r"""The learning rate for a matrix of ``shape`` = (A, B), as torch.optim.Muon scales it.

    - ``"original"`` (or ``None``), Jordan's: :math:`\gamma\sqrt{\max(1, A/B)}`;
    - ``"match_rms_adamw"``, Moonshot's (Liu et al., 2025):
      :math:`0.2\,\gamma\sqrt{\max(A, B)}`, which gives the update the RMS of
      a typical AdamW update, so AdamW's learning rate and weight decay carry over;
    - ``"spectral_unclamped"``, Bernstein's: :math:`\gamma\sqrt{A/B}`.
    """
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    elif adjust_lr_fn == "spectral_unclamped":
        ratio = math.sqrt(rows / cols)
    else:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
    return lr * ratio


def as_matrix_shape(shape: Sequence[int], flatten: bool) -> tuple[int, int]:
    """The matrix a parameter is treated as: itself, or, flattened, (shape[0], the rest)."""
    if flatten and len(shape) > 2:
        return shape[0], math.prod(shape[1:])
    return shape[0], shape[1]


def orthogonalized_update(
    direction: Tensor,
    param: Tensor,
    *,
    flatten: bool,
    ns_coefficients: Sequence[float],
    ns_steps: int,
    eps: float,
) -> Tensor:
    """``orthogonalize`` applied to a parameter's update direction, shaped like the parameter.

    A convolution kernel (``flatten``) is orthogonalized as the matrix
    (out_channels, in_channels * kernel size) and reshaped back. A parameter
    that is a DTensor (FSDP2's row shards, or any other placements) is
    orthogonalized whole: the direction's shards are gathered, every process
    orthogonalizes the full matrix, and keeps the part of the result that
    lies in its own shard of the parameter.
    """
    sharded, like = _as_dtensor(direction), _as_dtensor(param)
    whole = sharded.full_tensor() if sharded is not None else direction
    matrix = whole.reshape(as_matrix_shape(whole.shape, flatten))
    update = orthogonalize(matrix, ns_coefficients, ns_steps, eps).reshape(whole.shape)
    if like is not None:
        from torch.distributed.tensor import distribute_tensor

        # src_data_rank=None: each process cuts its shard from its own copy, no communication.
        update = distribute_tensor(update, like.device_mesh, like.placements, src_data_rank=None)
    return update


def _as_dtensor(tensor: Tensor) -> DTensor | None:
    """The tensor as a DTensor if it is one (a parameter that FSDP2 shards), else ``None``."""
    return cast("DTensor", tensor) if is_dtensor(tensor) else None


def muon_for_loop(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    eps: float,
    ns_steps: int,
    adjust_lr_fn: str | None,
    flatten: bool,
) -> None:
    """The reference implementation: one update per matrix."""
    for param, grad, buffer in zip(params, grads, momentum_buffers, strict=True):
        update_average(buffer, grad, decay=momentum)
        direction = grad.lerp(buffer, momentum) if nesterov else buffer
        update = orthogonalized_update(
            direction,
            param,
            flatten=flatten,
            ns_coefficients=ns_coefficients,
            ns_steps=ns_steps,
            eps=eps,
        )
        decay_weights(param, lr=lr, weight_decay=weight_decay)
        step_size = adjusted_lr(lr, adjust_lr_fn, as_matrix_shape(param.shape, flatten))
        param.add_(update, alpha=-step_size)


class Muon(Optimizer):
    r"""Muon (Jordan et al., 2024), a drop-in twin of :class:`torch.optim.Muon`.

    MomentUm Orthogonalized by Newton-Schulz, for the 2-D weight matrices of
    a network's hidden layers; embeddings, the output head, biases and norm
    weights belong to another optimizer (see :func:`~optimlib.muon.muon_and_adamw`). Each
    step, for a gradient :math:`G_t` of shape :math:`A \times B`:

    .. math::

        B_t &= \mu B_{t-1} + (1 - \mu)\, G_t \\
        D_t &= \mu B_t + (1 - \mu)\, G_t
            \quad \text{(Nesterov; otherwise } D_t = B_t) \\
        O_t &= \mathrm{NS}_k^{(a,b,c)}(D_t) \approx U V^\top
            \quad \text{where } D_t = U S V^\top \\
        \theta_t &= (1 - \gamma\lambda)\, \theta_{t-1} - \gamma'\, O_t

    The momentum is an exponential moving average (``lerp``), as torch's code
    computes it. torch's docstring writes :math:`B_t = \mu B_{t-1} + G_t` and
    :math:`D_t = G_t + \mu B_t` instead, which is the same update scaled by
    :math:`1/(1-\mu)`; since :math:`\mathrm{NS}` normalizes its input first,
    the two differ only in bfloat16 rounding and where ``eps`` matters, on
    gradients of norm near zero.

    :math:`\mathrm{NS}_k^{(a,b,c)}` is ``ns_steps`` = :math:`k` steps of the
    Newton-Schulz iteration in bfloat16 (``orthogonalize``): every
    singular value of the update moves to about 1, so that the step moves
    the weights by the same amount in every direction of the matrix,
    however unevenly the gradient is spread over them. The weight decay is
    decoupled and uses the learning rate :math:`\gamma` itself; the
    orthogonalized update uses :math:`\gamma'`, the rate adjusted to the
    matrix's shape by ``adjust_lr_fn`` (``adjusted_lr``). State:
    ``momentum_buffer`` (:math:`B`).

    Beyond torch.optim.Muon:

    - **FSDP2.** A parameter that is a DTensor (``fully_shard``) is updated
      with the orthogonalization of its whole update matrix: each process
      gathers the direction's shards (one all-gather per matrix and step),
      orthogonalizes the full matrix, and applies its own shard of the
      result, so sharded training takes the steps of single-process training,
      number for number. torch's Muon runs its iteration on the DTensors
      themselves, which is also the whole matrix, but through a dozen or more
      collectives per matrix and step, with bfloat16 partial products
      summed across processes where a matrix is taller than wide: its
      sharded run then differs from its own single-process run.
    - **Convolution kernels.** A parameter group with ``flatten=True`` also
      takes parameters of more than two dimensions; each is orthogonalized
      (and its learning rate adjusted) as the matrix
      ``(shape[0], prod(shape[1:]))``, Jordan's treatment of convolution
      filters. torch has no such option; groups without it behave as torch's.
    - **All or nothing.** Every check is made before anything changes. torch
      checks a gradient's dimensions, ``ns_steps`` and ``ns_coefficients``
      inside its loop, after earlier matrices (and the momentum buffer of the
      failing one) were updated; optimlib raises the same errors first.
    - **Stricter** where torch would silently compute something else: a
      string for ``nesterov``, a negative ``eps`` or ``ns_steps``, and an
      ``adjust_lr_fn`` that a group was given after construction and that
      torch would read as "no adjustment". A parameter added with
      ``add_param_group`` must be 2-D there and then, with torch's
      construction-time error, rather than at its first step.
    - With a bfloat16 parameter and ``nesterov=False``, torch normalizes the
      momentum buffer in place (its ``grad.bfloat16()`` is the buffer itself);
      optimlib leaves the buffer an average of gradients.

    torch has no foreach path for Muon, and neither has optimlib: the
    iteration is matrix products, one matrix at a time.

    References: K. Jordan et al., "Muon: An optimizer for hidden layers in
    neural networks" (2024), https://kellerjordan.github.io/posts/muon/;
    J. Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982
    (2025); J. Bernstein, "Deriving Muon" (2025),
    https://jeremybernste.in/writing/deriving-muon.
    """

    state_spec = spec(momentum_buffer=zeros())
    for_loop_update = muon_for_loop

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
        eps: float = DEFAULT_EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        _check_at_least_zero("lr", lr, "Learning rate")
        _check_at_least_zero("momentum", momentum, "momentum")
        _check_at_least_zero("weight_decay", weight_decay, "weight decay")
        check_bool("nesterov", nesterov)
        check_non_negative("eps", eps)
        _check_adjust_lr_fn(adjust_lr_fn)
        super().__init__(params, defaults_from(locals()))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, refusing parameters that are not matrices, in torch's words."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        flatten = bool(group.get("flatten", False))
        for param in group["params"]:
            if param.ndim == 2 or (flatten and param.ndim > 2):
                continue
            self.param_groups.pop()  # torch.optim.Optimizer.add_param_group only appended
            if flatten:
                raise ValueError(
                    "Muon with flatten=True needs parameters of at least 2 dimensions whereas "
                    f"we found a parameter with size: {param.size()}"
                )
            raise ValueError(
                "Muon only supports 2D parameters whereas we found a parameter with size: "
                f"{param.size()}"
            )

    def check_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        for param in params:
            if param.is_complex():
                raise RuntimeError("Muon does not support complex parameters")
            if param.grad is not None and param.grad.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
        super().check_group(group, params)
        if not params:
            return
        flatten = bool(group.get("flatten", False))
        for param in params:
            grad = param.grad
            if grad is not None and not (grad.ndim == 2 or (flatten and grad.ndim > 2)):
                raise ValueError("Param gradient must be a 2D matrix")
        ns_steps = group["ns_steps"]
        check_integer("ns_steps", ns_steps)
        if ns_steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        coefficients = group["ns_coefficients"]
        if not isinstance(coefficients, Sequence):
            raise TypeError(
                f"Invalid ns_coefficients: {coefficients!r} (must be a tuple (a, b, c))"
            )
        if len(coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        _check_adjust_lr_fn(group["adjust_lr_fn"])

    def hyperparameters(self, group: dict[str, Any], update: UpdateFn) -> dict[str, Any]:
        # flatten is a group option only (torch's groups lack it), off unless a group sets it.
        return super().hyperparameters({"flatten": False, **group}, update)


def _check_at_least_zero(name: str, value: Any, words: str) -> None:
    """torch.optim.Muon's check, in its words: ``Learning rate should be >= 0 but is: -1``."""
    if not _as_number(name, value) >= 0.0:  # "not >=": NaN is refused too, as torch refuses it
        raise ValueError(f"{words} should be >= 0 but is: {value}")


def _check_adjust_lr_fn(adjust_lr_fn: Any) -> None:
    if adjust_lr_fn is not None and adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")


# ---------------------------------------------------------------- Muon with AdamW

#: ``head="auto"``: the last ``nn.Linear`` registered in the model is its output head.
AUTO = "auto"
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MuonAndAdamW(NamedTuple):
    """The two optimizers :func:`muon_and_adamw` builds; step and clear them together."""

    muon: Muon
    adamw: AdamW

    def step(self) -> None:
        """One step of each optimizer (Muon first; they share no parameter)."""
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)


class ParameterSplit(NamedTuple):
    """Which of a model's parameters each optimizer gets, by name."""

    #: Hidden weight matrices, for Muon as they are.
    matrices: list[tuple[str, nn.Parameter]]
    #: Convolution kernels, for Muon flattened to matrices (``flatten_convolutions``).
    kernels: list[tuple[str, nn.Parameter]]
    #: Everything else, for AdamW.
    others: list[tuple[str, nn.Parameter]]


def split_parameters(
    model: nn.Module,
    *,
    flatten_convolutions: bool = False,
    head: nn.Module | str | None = AUTO,
    exclude: Iterable[str] = (),
) -> ParameterSplit:
    """Sort a model's parameters into Muon's matrices, Muon's kernels and AdamW's rest.

    The rules, in order (each parameter counted once, tied weights included):

    1. The parameters of every ``nn.Embedding`` and ``nn.EmbeddingBag`` go
       to AdamW: an embedding's rows are looked up one token at a time, not
       multiplied as one matrix.
    2. The parameters of the output ``head`` go to AdamW. ``head="auto"``
       takes the last ``nn.Linear`` registered in the model (the order of
       ``model.modules()``), which is the head of a ``Sequential`` and of
       models that define their head last, as language models usually do; a
       module name (as ``model.get_submodule`` takes it) or a module names
       it instead; ``None``: the model has no head to set apart. A head whose
       weight is tied to the embedding is covered by rule 1 as well; a head
       computed without a module (``F.linear(x, embedding.weight)``) needs
       ``head=None``, or "auto" would take the last hidden layer for it.
    3. Parameters named in ``exclude`` (as ``model.named_parameters()`` names
       them: a positional embedding held as a bare ``nn.Parameter``, say) go
       to AdamW.
    4. Every other 2-D parameter is a hidden matrix, for Muon.
    5. With ``flatten_convolutions``, the kernels of ``nn.Conv1d``/``2d``/``3d``
       are for Muon, flattened; without it, and for transposed convolutions,
       they go to AdamW.
    6. The rest (biases, norm weights, scalars, anything not 2-D) go to AdamW.
    """
    excluded = set(exclude)
    named = dict(model.named_parameters())
    unknown = excluded - named.keys()
    if unknown:
        raise ValueError(f"exclude names parameters the model does not have: {sorted(unknown)}")
    to_adamw = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag)
        for p in m.parameters()
    }
    head_module = _find_head(model, head)
    if head_module is not None:
        to_adamw |= {id(p) for p in head_module.parameters()}
    to_adamw |= {id(named[name]) for name in excluded}
    kernel_ids = (
        {id(m.weight) for m in model.modules() if isinstance(m, _CONVOLUTIONS)}
        if flatten_convolutions
        else set()
    )
    split = ParameterSplit([], [], [])
    for name, param in named.items():
        if id(param) in to_adamw:
            split.others.append((name, param))
        elif param.ndim == 2:
            split.matrices.append((name, param))
        elif id(param) in kernel_ids:
            split.kernels.append((name, param))
        else:
            split.others.append((name, param))
    return split


def _find_head(model: nn.Module, head: nn.Module | str | None) -> nn.Module | None:
    if head is None or isinstance(head, nn.Module):
        return head
    if head == AUTO:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return linears[-1] if linears else None
    return model.get_submodule(head)


def muon_and_adamw(
    model: nn.Module,
    *,
    muon_kwargs: dict[str, Any] | None = None,
    adamw_kwargs: dict[str, Any] | None = None,
    flatten_convolutions: bool = False,
    head: nn.Module | str | None = AUTO,
    exclude: Iterable[str] = (),
    exempt_from_decay: bool = False,
) -> MuonAndAdamW:
    """Muon for a model's hidden weight matrices, AdamW for the rest, as Muon is meant to run.

    The parameters are split by :func:`split_parameters` (embeddings and the
    output head are detected there: ``nn.Embedding`` modules, and the last
    ``nn.Linear`` or the ``head`` named). Muon gets one group of matrices and,
    with ``flatten_convolutions``, a second group of convolution kernels with
    ``flatten=True``; AdamW (:class:`optimlib.adam.AdamW`) gets one group of
    everything else. Groups hold ``(name, parameter)`` pairs, so each
    optimizer's ``param_groups`` show which parameters it took.
    ``muon_kwargs`` and ``adamw_kwargs`` go to the two constructors.

    With ``exempt_from_decay``, AdamW's parameters are split once more, by the
    rules of :func:`optimlib.param_groups.weight_decay_groups`: the head's
    weight keeps ``adamw_kwargs``' weight decay, and the biases, normalization
    parameters and embeddings get a second group with ``weight_decay`` 0 (an
    empty group is left out). Muon's matrices and kernels are all weights.

    Example::

        optimizers = muon_and_adamw(
            model, muon_kwargs={"lr": 0.02}, adamw_kwargs={"lr": 3e-4, "weight_decay": 0.01}
        )
        loss_fn(model(inputs), targets).backward()
        optimizers.step()  # or optimizers.muon.step(); optimizers.adamw.step()
        optimizers.zero_grad()

    Raises ``ValueError`` when either optimizer would get no parameter: build
    the other one directly then.
    """
    check_bool("exempt_from_decay", exempt_from_decay)
    split = split_parameters(
        model, flatten_convolutions=flatten_convolutions, head=head, exclude=exclude
    )
    if not (split.matrices or split.kernels):
        raise ValueError(
            "muon_and_adamw found no hidden weight matrix for Muon (every 2-D parameter is an "
            "embedding, the head, or excluded); use AdamW alone"
        )
    if not split.others:
        raise ValueError(
            "muon_and_adamw found no parameter for AdamW (no embedding, head, bias or norm "
            "weight); use Muon alone"
        )
    muon_groups: list[dict[str, Any]] = []
    if split.matrices:
        muon_groups.append({"params": split.matrices})
    if split.kernels:
        muon_groups.append({"params": split.kernels, "flatten": True})
    adamw_groups: list[dict[str, Any]] = [{"params": split.others}]
    if exempt_from_decay:
        decayed_ids = {id(p) for p in weight_decay_groups(model, 0.0)[0]["params"]}
        decayed = [(n, p) for n, p in split.others if id(p) in decayed_ids]
        exempt = [(n, p) for n, p in split.others if id(p) not in decayed_ids]
        adamw_groups = [{"params": decayed}] if decayed else []
        if exempt:
            adamw_groups.append({"params": exempt, "weight_decay": 0.0})
    return MuonAndAdamW(
        Muon(muon_groups, **(muon_kwargs or {})),
        AdamW(adamw_groups, **(adamw_kwargs or {})),
    )
