r"""SGD with a randomly scaled learning rate: Chapter 7's first worked example."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimlib._validation import check_common
from optimlib.optimizer import Optimizer, ParamsT, defaults_from
from optimlib.sgd import sgd_for_loop, sgd_foreach

GENERATOR_KEY = "generator_state"


def random_scale_sgd_for_loop(
    params: list[Tensor], grads: list[Tensor], *, lr: float, factor: float, maximize: bool
) -> None:
    r"""Plain SGD's for-loop with :math:`\gamma u_t` as the learning rate."""
    sgd_for_loop(params, grads, [None] * len(params), **_plain_sgd(lr * factor, maximize))


def random_scale_sgd_foreach(
    params: list[Tensor], grads: list[Tensor], *, lr: float, factor: float, maximize: bool
) -> None:
    """The same update through plain SGD's foreach implementation."""
    sgd_foreach(params, grads, [None] * len(params), **_plain_sgd(lr * factor, maximize))


def _plain_sgd(lr: float, maximize: bool) -> dict[str, Any]:
    return {
        "lr": lr,
        "momentum": 0,
        "dampening": 0,
        "weight_decay": 0,
        "nesterov": False,
        "maximize": maximize,
    }


class RandomScaleSGD(Optimizer):
    r"""SGD whose learning rate is multiplied by a fresh random factor at every step.

    .. math::

        u_t \sim \mathcal{U}[0, 1), \qquad
        \theta_t = \theta_{t-1} - \gamma\, u_t\, g_t

    One factor is drawn per step, shared by all parameter groups, from a
    ``torch.Generator`` seeded with ``seed``: ``step_values()`` draws it,
    and the base class hands it to every group's update as ``factor``. The
    generator's state travels in ``state_dict()`` under ``"generator_state"``
    (through the optimizer's state-dict hooks), so a run resumed from a
    checkpoint draws exactly the factors the uninterrupted run would have
    drawn. The update itself is plain SGD's, for-loop and foreach, with
    ``lr * u`` as the learning rate. The factors drawn so far are kept in the
    list ``factors`` for inspection.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\gamma \ge 0` before scaling.
        seed: seeds the factor generator.
        maximize, foreach: as in :class:`optimlib.SGD`.
    """

    supports_complex = True
    for_loop_update, foreach_update = random_scale_sgd_for_loop, random_scale_sgd_foreach

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        *,
        seed: int = 0,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_common(lr, foreach=foreach, maximize=maximize)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"Invalid seed: {seed!r} (must be an integer)")
        super().__init__(params, defaults_from(locals()))
        self.generator = torch.Generator().manual_seed(seed)
        self.factors: list[float] = []
        self._register_generator_hooks()

    def _register_generator_hooks(self) -> None:
        self.register_state_dict_post_hook(_save_generator)
        self.register_load_state_dict_pre_hook(_take_generator_state)
        self.register_load_state_dict_post_hook(_restore_generator)
        self._loaded_generator_state: Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy.deepcopy`` and ``pickle`` keep: torch's three entries, the generator too.

        torch.optim.Optimizer keeps only ``defaults``, ``state`` and
        ``param_groups``; without the generator a copy could not draw.
        """
        return {
            **super().__getstate__(),
            "generator_state": self.generator.get_state(),
            "factors": list(self.factors),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict calls this too, with the state and groups alone: its
        # hooks restore the generator, and a copy restores it here.
        copied = "generator_state" in state
        generator_state, factors = state.pop("generator_state", None), state.pop("factors", None)
        super().__setstate__(state)
        if copied:
            self.generator = torch.Generator()
            self.generator.set_state(generator_state)
            self.factors = factors
            self._register_generator_hooks()

    def draw_factor(self) -> float:
        """The next :math:`u_t`; drawn on the CPU, so no device synchronises."""
        factor = torch.rand((), generator=self.generator, dtype=torch.float64).item()
        self.factors.append(factor)
        return factor

    def step_values(self) -> dict[str, Any]:
        """One factor per step, the same for every parameter group."""
        return {"factor": self.draw_factor()}


def _save_generator(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(optimizer, RandomScaleSGD)
    state_dict[GENERATOR_KEY] = optimizer.generator.get_state()
    return state_dict


def _take_generator_state(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """Set the saved generator state aside; it is applied once the load has succeeded.

    A pre-hook runs before ``load_state_dict`` checks the checkpoint against the
    parameter groups, so restoring here would change the generator even when
    the load then fails. (The hook gets a shallow copy: popping leaves the
    caller's dict as it was.)
    """
    assert isinstance(optimizer, RandomScaleSGD)
    if GENERATOR_KEY not in state_dict:
        raise KeyError(
            f"this checkpoint has no '{GENERATOR_KEY}': it was not saved by RandomScaleSGD, "
            "so the random factors cannot be resumed"
        )
    # A CPU generator takes a CPU state, also from a checkpoint loaded onto a GPU.
    optimizer._loaded_generator_state = state_dict.pop(GENERATOR_KEY).cpu()


def _restore_generator(optimizer: torch.optim.Optimizer) -> None:
    assert isinstance(optimizer, RandomScaleSGD)
    if optimizer._loaded_generator_state is not None:
        optimizer.generator.set_state(optimizer._loaded_generator_state)
        optimizer._loaded_generator_state = None
