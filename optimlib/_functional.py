r"""Small update pieces that several algorithms share, each in two forms.

The per-tensor form serves the for-loop reference; the ``foreach_`` form does
the same arithmetic on lists of tensors and must give identical results.
"""

from __future__ import annotations

import torch
from torch import Tensor


def descent_direction(
    param: Tensor, grad: Tensor, *, weight_decay: float, maximize: bool
) -> Tensor:
    r"""The gradient to descend along: :math:`\pm g + \lambda \theta`.

    ``maximize`` flips the sign of the gradient (gradient ascent on the
    objective is descent on its negative); ``weight_decay`` adds the gradient
    of the L2 penalty :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2`. Returns
    ``grad`` itself when there is nothing to change, a new tensor otherwise,
    so the caller never modifies the user's ``.grad``.
    """
    direction = -grad if maximize else grad
    if weight_decay != 0:
        direction = direction.add(param, alpha=weight_decay)
    return direction


def foreach_descent_direction(
    params: list[Tensor], grads: list[Tensor], *, weight_decay: float, maximize: bool
) -> list[Tensor]:
    """:func:`descent_direction` for lists of tensors."""
    directions = torch._foreach_neg(grads) if maximize else grads
    if weight_decay != 0:
        directions = torch._foreach_add(directions, params, alpha=weight_decay)
    return directions
