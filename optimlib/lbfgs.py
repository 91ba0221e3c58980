r"""L-BFGS: a quasi-Newton method that learns curvature from recent steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimlib._validation import check_bool, check_integer, check_non_negative, check_range
from optimlib.optimizer import Optimizer, ParamsT, to_scalar

LINE_SEARCHES = (None, "strong_wolfe")
#: A step length, loss or slope in the line search: a Python float or a 0-d
#: tensor, mixed as torch.optim.LBFGS mixes them (so no precise type is claimed).
Scalar = Any


class LBFGS(Optimizer):
    r"""L-BFGS (Liu and Nocedal, 1989), a drop-in twin of :class:`torch.optim.LBFGS`.

    Newton's method steps along :math:`-H^{-1} g`. L-BFGS never forms the
    Hessian :math:`H`: from the last ``history_size`` pairs of steps
    :math:`s_k = \theta_{k+1} - \theta_k` and gradient changes
    :math:`y_k = g_{k+1} - g_k` it applies an approximation of :math:`H^{-1}`
    to the gradient with the two-loop recursion (:func:`optimlib.lbfgs.two_loop_direction`),
    starting from the scaled identity
    :math:`H_0^{-1} = \frac{s^\top y}{y^\top y} I`. Each call of ``step``
    runs up to ``max_iter`` iterations: compute the direction :math:`d`, then
    either step by ``lr`` (the first by :math:`\min(1, 1/\lVert g\rVert_1)\,\gamma`)
    or search along :math:`d` for a step satisfying the strong Wolfe conditions
    (``line_search_fn="strong_wolfe"``,
    :func:`optimlib.lbfgs.strong_wolfe_search`).

    It stops early when the largest gradient entry is at most
    ``tolerance_grad``, or when the step or the change of the loss is below
    ``tolerance_change``, or after ``max_eval`` evaluations of the closure.
    It needs a closure (it re-evaluates the loss), works on one parameter
    group, treats all parameters as one flat vector, and keeps
    :math:`2\,\texttt{history\_size}` vectors of that size: about
    ``param_bytes * (2 * history_size + 2)`` bytes of state.
    """

    #: Sparse gradients are made dense for the flat gradient, as torch.optim.LBFGS does.
    supports_sparse = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        *,
        maximize: bool = False,
    ) -> None:
        check_non_negative("lr", lr)
        check_integer("max_iter", max_iter, 1)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        check_integer("max_eval", max_eval, 1)
        # Any number torch takes (inf stops after the first evaluation, -inf never
        # stops on that test); only NaN, which no comparison can use, is refused.
        check_range("tolerance_grad", tolerance_grad)
        check_range("tolerance_change", tolerance_change)
        check_integer("history_size", history_size, 1)
        if line_search_fn not in LINE_SEARCHES:
            raise ValueError(
                f"Invalid line_search_fn: {line_search_fn!r} (must be None or 'strong_wolfe')"
            )
        check_bool("maximize", maximize)
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        self._check_single_group()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if len(self.param_groups) > 1:
            self.param_groups.pop()
            self._check_single_group(extra=True)

    def _check_single_group(self, extra: bool = False) -> None:
        if extra or len(self.param_groups) != 1:
            raise ValueError(
                "LBFGS works on a single parameter group: it treats all parameters as one "
                "vector, so per-group options do not exist; pass a list of tensors"
            )

    @property
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    # -- the parameters as one flat vector ------------------------------------

    # A complex parameter counts as its real and imaginary parts, as torch's does.

    def _flat_gradient(self) -> Tensor:
        pieces = []
        for p in self._params:
            if p.grad is None:
                pieces.append(_real_view(p).new_zeros(_real_view(p).numel()))
            elif p.grad.is_sparse:
                pieces.append(_real_view(p.grad.to_dense()).reshape(-1))
            else:
                pieces.append(_real_view(p.grad).reshape(-1))
        flat = torch.cat(pieces, 0)
        return flat.neg_() if self.param_groups[0]["maximize"] else flat

    def _move(self, step_size: float | Tensor, direction: Tensor) -> None:
        offset = 0
        for p in self._params:
            real = _real_view(p)
            piece = direction[offset : offset + real.numel()]
            real.add_(piece.view_as(real), alpha=float(step_size))
            offset += real.numel()

    def _evaluate(self, closure: Callable[[], Tensor]) -> tuple[float, Tensor]:
        """Loss (as a number, negated under maximize) and flat gradient, via the closure."""
        with torch.enable_grad():
            loss = _as_number(closure())
        return (-loss if self.param_groups[0]["maximize"] else loss), self._flat_gradient()

    # -- the step ---------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; return the loss before them.

        Args:
            closure: required. Clears the gradients, computes the loss, calls
                ``backward()`` and returns the loss.
        """
        if closure is None:
            raise ValueError(
                "LBFGS.step needs a closure: it evaluates the loss several times per step. "
                "Pass a function that zeroes the gradients, computes the loss, calls "
                "backward() and returns the loss"
            )
        self._check_single_group()
        group = self.param_groups[0]
        self.check_group(group, self._params)  # the base class's checks (fused, sparse, ...)
        lr = to_scalar(group["lr"])
        maximize = group["maximize"]
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with torch.enable_grad():
            first_loss = closure()
        loss = -_as_number(first_loss) if maximize else _as_number(first_loss)
        evaluations = 1
        state["func_evals"] += 1
        gradient = self._flat_gradient()
        if gradient.abs().max() <= group["tolerance_grad"]:
            return first_loss

        direction, step_size = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag = state.get("H_diag")
        previous_gradient, previous_loss = state.get("prev_flat_grad"), state.get("prev_loss")

        for iteration in range(1, group["max_iter"] + 1):
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                direction = gradient.neg()
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                y = gradient.sub(previous_gradient)
                s = direction.mul(step_size)
                ys = y.dot(s)
                if ys > 1e-10:  # keep the pair only if it shows positive curvature
                    if len(old_dirs) == group["history_size"]:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                if "al" not in state:
                    state["al"] = [None] * group["history_size"]
                direction = two_loop_direction(
                    gradient, old_dirs, old_stps, ro, h_diag, state["al"]
                )

            if previous_gradient is None:
                previous_gradient = gradient.clone(memory_format=torch.contiguous_format)
            else:
                previous_gradient.copy_(gradient)
            previous_loss = loss

            if state["n_iter"] == 1:
                step_size = min(1.0, 1.0 / gradient.abs().sum()) * lr
            else:
                step_size = lr
            slope = gradient.dot(direction)
            if slope > -group["tolerance_change"]:
                break  # not a descent direction any more

            if group["line_search_fn"] == "strong_wolfe":
                start = [p.clone(memory_format=torch.contiguous_format) for p in self._params]

                def along(start_point: list[Tensor], t: float, d: Tensor) -> tuple[float, Tensor]:
                    self._move(t, d)
                    result = self._evaluate(closure)
                    for p, saved in zip(self._params, start_point, strict=True):
                        p.copy_(saved)
                    return result

                loss, gradient, step_size, used = strong_wolfe_search(
                    along,
                    start,
                    step_size,
                    direction,
                    loss,
                    gradient,
                    slope,
                    tolerance_change=group["tolerance_change"],
                    max_evaluations=group["max_eval"] - evaluations,
                )
                self._move(step_size, direction)
                converged = gradient.abs().max() <= group["tolerance_grad"]
            else:
                self._move(step_size, direction)
                used, converged = 0, False
                if iteration != group["max_iter"]:
                    loss, gradient = self._evaluate(closure)
                    converged = gradient.abs().max() <= group["tolerance_grad"]
                    used = 1
            evaluations += used
            state["func_evals"] += used

            if (
                iteration == group["max_iter"]
                or evaluations >= group["max_eval"]
                or converged
                or direction.mul(step_size).abs().max() <= group["tolerance_change"]
                or abs(loss - previous_loss) < group["tolerance_change"]
            ):
                break

        state.update(
            d=direction,
            t=step_size,
            old_dirs=old_dirs,
            old_stps=old_stps,
            ro=ro,
            H_diag=h_diag,
            prev_flat_grad=previous_gradient,
            prev_loss=previous_loss,
        )
        return first_loss


def _real_view(tensor: Tensor) -> Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def _as_number(loss: Tensor | float) -> float:
    return float(loss.detach()) if isinstance(loss, Tensor) else float(loss)


def two_loop_direction(
    gradient: Tensor,
    old_dirs: list[Tensor],
    old_stps: list[Tensor],
    ro: list[Tensor],
    h_diag: Tensor | float,
    alphas: list[Any],
) -> Tensor:
    r"""The quasi-Newton direction :math:`-H_k^{-1} g` (Nocedal and Wright, Algorithm 7.4).

    ``old_dirs`` holds the gradient changes :math:`y_i`, ``old_stps`` the steps
    :math:`s_i` and ``ro`` the numbers :math:`\rho_i = 1/(y_i^\top s_i)`,
    oldest first; ``alphas`` is scratch space of at least their length.
    """
    q = gradient.neg()
    for i in range(len(old_dirs) - 1, -1, -1):
        alphas[i] = old_stps[i].dot(q) * ro[i]
        q.add_(old_dirs[i], alpha=-alphas[i])
    r = torch.mul(q, h_diag)
    for i in range(len(old_dirs)):
        beta = old_dirs[i].dot(r) * ro[i]
        r.add_(old_stps[i], alpha=alphas[i] - beta)
    return r


def cubic_minimizer(
    x1: Scalar,
    f1: Scalar,
    g1: Scalar,
    x2: Scalar,
    f2: Scalar,
    g2: Scalar,
    bounds: tuple[Scalar, Scalar] | None = None,
) -> Scalar:
    """Minimiser of the cubic through two points with given values and slopes, clipped to
    ``bounds`` (by default the interval between the points); the midpoint when the cubic
    has no real minimiser."""
    low, high = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if not d2_square >= 0:  # a NaN takes the midpoint too, as in torch.optim.LBFGS
        return (low + high) / 2.0
    d2 = d2_square.sqrt()
    if x1 <= x2:
        position = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        position = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(position, low), high)


def strong_wolfe_search(
    evaluate: Callable[[list[Tensor], Scalar, Tensor], tuple[Scalar, Tensor]],
    start: list[Tensor],
    t: Scalar,
    direction: Tensor,
    loss: Scalar,
    gradient: Tensor,
    slope: Scalar,
    *,
    sufficient_decrease: float = 1e-4,
    curvature: float = 0.9,
    tolerance_change: float = 1e-9,
    max_evaluations: int = 25,
) -> tuple[Scalar, Tensor, Scalar, int]:
    r"""Find a step :math:`t` along ``direction`` satisfying the strong Wolfe conditions.

    .. math::

        f(\theta + t d) \le f(\theta) + c_1 t\, g^\top d, \qquad
        |\nabla f(\theta + t d)^\top d| \le c_2\, |g^\top d|

    (sufficient decrease and curvature, :math:`c_1 = 10^{-4}`,
    :math:`c_2 = 0.9`). First the step grows until it brackets an acceptable
    point, then the bracket is shrunk by cubic interpolation ("zoom"; Nocedal
    and Wright, Algorithms 3.5 and 3.6). ``evaluate(start, t, direction)``
    returns the loss and flat gradient at :math:`\theta + t d`. Returns the
    loss, gradient and step found, and the number of evaluations used.
    """
    largest_entry = direction.abs().max()
    gradient = gradient.clone(memory_format=torch.contiguous_format)
    new_loss, new_gradient = evaluate(start, t, direction)
    evaluations = 1
    new_slope = new_gradient.dot(direction)
    t_prev, loss_prev, gradient_prev, slope_prev = 0, loss, gradient, slope
    done = False
    iterations = 0

    def sufficient(step: Scalar, value: Scalar) -> bool:
        return value > loss + sufficient_decrease * step * slope

    # Phase 1: grow the step until [t_prev, t] brackets an acceptable point.
    while iterations < max_evaluations:
        if sufficient(t, new_loss) or (iterations > 1 and new_loss >= loss_prev):
            bracket = [t_prev, t]
            values = [loss_prev, new_loss]
            gradients = [gradient_prev, new_gradient.clone(memory_format=torch.contiguous_format)]
            slopes = [slope_prev, new_slope]
            break
        if abs(new_slope) <= -curvature * slope:
            bracket, values, gradients = [t], [new_loss], [new_gradient]
            done = True
            break
        if new_slope >= 0:
            bracket = [t_prev, t]
            values = [loss_prev, new_loss]
            gradients = [gradient_prev, new_gradient.clone(memory_format=torch.contiguous_format)]
            slopes = [slope_prev, new_slope]
            break
        previous = t
        t = cubic_minimizer(
            t_prev,
            loss_prev,
            slope_prev,
            t,
            new_loss,
            new_slope,
            bounds=(t + 0.01 * (t - t_prev), t * 10),
        )
        t_prev, loss_prev, slope_prev = previous, new_loss, new_slope
        gradient_prev = new_gradient.clone(memory_format=torch.contiguous_format)
        new_loss, new_gradient = evaluate(start, t, direction)
        evaluations += 1
        new_slope = new_gradient.dot(direction)
        iterations += 1
    if iterations == max_evaluations:
        bracket, values, gradients = [0, t], [loss, new_loss], [gradient, new_gradient]

    # Phase 2: zoom into the bracket until a point satisfies both conditions.
    stalled = False
    low, high = (0, 1) if values[0] <= values[-1] else (1, 0)
    while not done and iterations < max_evaluations:
        if abs(bracket[1] - bracket[0]) * largest_entry < tolerance_change:
            break
        t = cubic_minimizer(bracket[0], values[0], slopes[0], bracket[1], values[1], slopes[1])
        # Keep the trial point away from the bracket's ends, so the bracket shrinks.
        margin = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < margin:
            if stalled or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - margin
                else:
                    t = min(bracket) + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        new_loss, new_gradient = evaluate(start, t, direction)
        evaluations += 1
        new_slope = new_gradient.dot(direction)
        iterations += 1
        if sufficient(t, new_loss) or new_loss >= values[low]:
            bracket[high], values[high], slopes[high] = t, new_loss, new_slope
            gradients[high] = new_gradient.clone(memory_format=torch.contiguous_format)
            low, high = (0, 1) if values[0] <= values[1] else (1, 0)
        else:
            if abs(new_slope) <= -curvature * slope:
                done = True
            elif new_slope * (bracket[high] - bracket[low]) >= 0:
                bracket[high], values[high] = bracket[low], values[low]
                gradients[high], slopes[high] = gradients[low], slopes[low]
            bracket[low], values[low], slopes[low] = t, new_loss, new_slope
            gradients[low] = new_gradient.clone(memory_format=torch.contiguous_format)

    return values[low], gradients[low], bracket[low], evaluations
