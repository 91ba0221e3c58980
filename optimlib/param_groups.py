"""Parameter groups that apply weight decay to weight matrices and kernels only.

Weight decay pulls parameters towards zero. For the weights of linear and
convolutional layers that is the regularisation intended. A bias, or a
normalization layer's gain and offset, only shifts or rescales a layer's
output: there are few of them, they have no reason to be small, and pulling
a gain towards zero shrinks what the layer passes on. Common practice ("no
bias decay", He et al. 2019, "Bag of Tricks for Image Classification with
Convolutional Neural Networks", after Jia et al. 2018) decays only the weights
of convolutional and fully connected layers. Embedding tables, read row by
row, are often left undecayed as well (minGPT does so); here they are by
default, and ``no_decay_types`` changes that.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from optimlib._validation import check_non_negative

__all__ = ["DECAY_TYPES", "NO_DECAY_TYPES", "weight_decay_groups"]

#: Layers whose ``weight`` is decayed: matrices and convolution kernels.
DECAY_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,  # Conv1d/2d/3d and ConvTranspose1d/2d/3d, lazy ones too
)

#: Layers none of whose parameters is decayed: normalization layers and embeddings.
NO_DECAY_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.Embedding,
    nn.EmbeddingBag,
)


def weight_decay_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    decay_types: tuple[type[nn.Module], ...] = DECAY_TYPES,
    no_decay_types: tuple[type[nn.Module], ...] = NO_DECAY_TYPES,
    no_decay_names: tuple[str, ...] = (),
    with_names: bool = False,
) -> list[dict[str, Any]]:
    """Split a model's parameters into a decayed and an undecayed parameter group.

    Each parameter is classified by the module that owns it and its name there:

    1. listed in ``no_decay_names`` (its full name, ``"head.scale"``): no decay;
    2. owned by a ``no_decay_types`` module (normalization, embedding): no decay;
    3. named ``weight`` in a ``decay_types`` module (``Linear``, ``Conv*d``): decay;
    4. any other parameter (a bias, a custom module's tensor): decayed if it has
       two or more dimensions (a matrix or a kernel), not if it is a vector or
       a scalar (a bias, a gain, a temperature).

    Every parameter of the model lands in exactly one group, in the order of
    ``model.named_parameters()``, frozen ones included (an optimizer skips a
    parameter without a gradient). A parameter shared by several modules (tied
    input and output embeddings, say) appears once, under its first name, and
    is decayed only if every module that uses it would decay it.

    Args:
        model: the network.
        weight_decay: the decay of the first group, >= 0; the second group's is 0.
        decay_types, no_decay_types: the module classes of rules 3 and 2.
        no_decay_names: full parameter names to exclude from decay as well.
        with_names: give the parameters as ``(name, parameter)`` pairs, as
            ``named_parameters()`` yields them; optimizers (torch >= 2.6 and
            optimlib) then keep the names in each group's ``"param_names"``.

    Returns:
        Two parameter groups, both always present and either possibly empty.
        The first holds the decayed parameters, with ``"weight_decay"`` set to
        ``weight_decay``, the second the others, with it set to 0. They suit
        any optimizer with a ``weight_decay`` option, as in
        ``AdamW(weight_decay_groups(model, 0.05), lr=1e-3)``.
    """
    check_non_negative("weight_decay", weight_decay)
    all_names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unknown = sorted(set(no_decay_names) - all_names)
    if unknown:
        raise ValueError(f"Invalid no_decay_names: the model has no parameter {unknown[0]!r}")

    decays: dict[int, bool] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attribute, param in module.named_parameters(recurse=False):
            name = f"{module_name}.{attribute}" if module_name else attribute
            verdict = name not in no_decay_names and _decays(
                module, attribute, param, decay_types, no_decay_types
            )
            decays[id(param)] = decays.get(id(param), True) and verdict

    decayed: list[Any] = []
    undecayed: list[Any] = []
    for name, param in model.named_parameters():
        entry = (name, param) if with_names else param
        (decayed if decays[id(param)] else undecayed).append(entry)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]


def _decays(
    module: nn.Module,
    attribute: str,
    param: Tensor,
    decay_types: tuple[type[nn.Module], ...],
    no_decay_types: tuple[type[nn.Module], ...],
) -> bool:
    if isinstance(module, no_decay_types):
        return False
    if isinstance(module, decay_types) and attribute == "weight":
        return True
    return param.dim() >= 2
