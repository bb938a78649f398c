"""Stochastic L-BFGS without line search (Schraudolph, Yu & Günter 2007), as the LODO authors ran it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lodo._flat import add_flat_, flat_grads, param_list
from lodo._validation import check_choice, check_nonnegative, check_positive, check_positive_int
from lodo.baselines._common import fail, flat_group, require_closure

__all__ = ["OnlineLBFGS", "SchraudolphLBFGS", "lbfgs_direction"]

_CLOSURE_CONTRACT = (
    "re-evaluates the loss at the new parameters on the same batch, calls backward() and returns the loss"
)


def lbfgs_direction(
    grad: torch.Tensor,
    s_history: list[torch.Tensor],
    y_history: list[torch.Tensor],
    scale: float | torch.Tensor,
) -> torch.Tensor:
    """−H·g by the standard two-loop recursion.

    H is the L-BFGS inverse-Hessian estimate built from the pairs (sᵢ, yᵢ), oldest first, on top
    of H₀ = scale·I. Every pair must have sᵢ·yᵢ ≠ 0.
    """
    q = grad.neg()
    rhos = [1.0 / torch.dot(s, y) for s, y in zip(s_history, y_history, strict=True)]
    alphas = []
    for s, y, rho in zip(reversed(s_history), reversed(y_history), reversed(rhos), strict=True):
        alpha = rho * torch.dot(s, q)
        q.sub_(alpha * y)
        alphas.append(alpha)
    r = q.mul_(scale)
    for s, y, rho, alpha in zip(s_history, y_history, rhos, reversed(alphas), strict=True):
        beta = rho * torch.dot(y, r)
        r.add_((alpha - beta) * s)
    return r


class _NoLineSearchLBFGS(torch.optim.Optimizer):
    """The loop shared by both variants; they differ only in the initial scaling of H₀."""

    _name = "L-BFGS"

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(param_list(params, self._name), defaults)
        flat_group(self, self._name)

    def _initial_scale(
        self, group: dict[str, Any], s_history: list[torch.Tensor], y_history: list[torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One iteration (2 loss evaluations: the caller's, in ``.grad``, and the closure's).

        Returns the closure's loss, i.e. the loss at the new parameters on the same batch.
        """
        closure = require_closure(closure, self._name, _CLOSURE_CONTRACT)
        group = self.param_groups[0]
        params = group["params"]
        state = self.state[params[0]]
        t = state.setdefault("step", 0)
        s_history = state.setdefault("s_history", [])
        y_history = state.setdefault("y_history", [])

        grad = flat_grads(params)
        if s_history:
            scale = self._initial_scale(group, s_history, y_history)
            direction = lbfgs_direction(grad, s_history, y_history, scale)
        else:
            direction = grad.mul(-group["eps"])
        s = direction.mul_(group["lr"] * group["tau"] / (group["tau"] + t))
        add_flat_(params, s)

        for p in params:  # so that the closure's backward() writes g' whether or not it zeroes grads
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        if all(p.grad is None for p in params):
            allowed = f"{self._name}.step needs a closure that {_CLOSURE_CONTRACT}"
            fail("closure", "one that left every .grad empty", allowed)
        y = flat_grads(params).sub_(grad)

        sy, yy = torch.dot(s, y), torch.dot(y, y)
        if bool(torch.isfinite(sy) & torch.isfinite(yy) & (sy != 0)):
            s_history.append(s)
            y_history.append(y)
            while len(s_history) > group["history_size"]:
                s_history.pop(0)
                y_history.pop(0)
        state["step"] = t + 1
        return loss


def _validated(lr: float, tau: float, eps: float, history_size: int) -> dict[str, Any]:
    return {
        "lr": check_nonnegative("lr", lr),
        "tau": check_positive("tau", tau),
        "eps": check_positive("eps", eps),
        "history_size": check_positive_int("history_size", history_size),
    }


_SHARED_DOC = r"""
    Loop (t = 0, 1, … counts iterations; the gain's t does not reset)::

        g  = the gradient in .grad (the caller evaluated the loss on a fresh batch)
        p  = −ε·g                                  if no pair is stored (t = 0)
             two-loop recursion on H₀ = c·I        otherwise (c: see above)
        s  = η_t·p,   η_t = lr·τ/(τ + t);   x ← x + s
        g' = closure()'s gradient at the new x on the SAME batch;   y = g' − g
        push (s, y), keeping the last history_size pairs

    All parameters are one flat vector (one group, one device, one dtype); the history is kept
    in the parameters' dtype and device.

    Closure (required; missing → ValueError naming ``closure``): it re-evaluates the loss at the
    new parameters on the same batch, calls ``backward()`` and returns the loss, as for
    ``torch.optim.LBFGS``. ``.grad`` is cleared before it is called, so zeroing is optional.
    ``step`` returns that loss; afterwards ``.grad`` holds g'. 2 loss evaluations per step.

    Curvature pairs: a pair with s·y = 0 (or a non-finite s·y or y·y) would divide by zero and
    is skipped, so the history never holds NaN. While no pair is stored, p = −ε·g (for example
    in float32, where the first ε-sized step can round away and give y = 0: prefer float64 or a
    larger ε). Pairs with s·y < 0 are kept, as in the reference (the direction may then not be
    a descent direction).

    Non-finite gradients: not checked: p and the parameters become non-finite, the pair is
    skipped, and the next loss is non-finite, which marks the trial diverged.

    Args:
        params: tensors or a single parameter-group dict.
        lr: η₀, the initial gain, finite and >= 0 (default 1e-3).
        tau: τ of the gain schedule, finite and > 0 (default 1e4).
        eps: ε, the scale of the first step, finite and > 0 (default 1e-10).
        history_size: pairs kept, integer >= 1 (default 48)."""


class SchraudolphLBFGS(_NoLineSearchLBFGS):
    __doc__ = (
        r"""The authors' stochastic L-BFGS without line search ("L-BFGS-no-line-search").

    Schraudolph et al.'s Algorithm 1 with the stochastic changes of their §3.2 and the initial
    scaling c = (s·y_{t−1})/(y_{t−1}·y_{t−1}) of §3.3, where y_{t−1} is the newest pair's y and s
    is chosen by ``scale_from``.
"""
        + _SHARED_DOC
        + r"""
        scale_from: ``"oldest"`` (default) replicates the reference code, which takes s from the
            oldest stored pair (a leftover loop variable); ``"newest"`` is the intended s_{t−1}.

    Reference: Schraudolph, Yu & Günter 2007, "A Stochastic Quasi-Newton Method for Online
    Convex Optimization" (AISTATS); the LODO authors' ``LBFGSNoLineSearchMinimizationProcedure``
    (``reference/lodo.md`` §2, §7.11).

    Differs from the reference: pairs with s·y = 0 are skipped (the reference divides by zero);
    ``scale_from="newest"`` is offered as the fix of its scaling bug.
    """
    )

    _name = "SchraudolphLBFGS"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        tau: float = 1e4,
        eps: float = 1e-10,
        history_size: int = 48,
        scale_from: str = "oldest",
    ) -> None:
        defaults = _validated(lr, tau, eps, history_size)
        defaults["scale_from"] = check_choice("scale_from", scale_from, ("oldest", "newest"))
        super().__init__(params, defaults)

    def _initial_scale(
        self, group: dict[str, Any], s_history: list[torch.Tensor], y_history: list[torch.Tensor]
    ) -> torch.Tensor:
        y = y_history[-1]
        s = s_history[0] if group["scale_from"] == "oldest" else s_history[-1]
        return torch.dot(s, y) / torch.dot(y, y)


class OnlineLBFGS(_NoLineSearchLBFGS):
    __doc__ = (
        r"""The authors' O-LBFGS: online L-BFGS scaled by the average curvature of the stored pairs.

    The same loop as :class:`SchraudolphLBFGS` with the initial scaling of Schraudolph et al.'s
    §3.3 averaged over the stored pairs: c = mean_i (sᵢ·yᵢ)/(yᵢ·yᵢ). The regulariser λ of the
    paper is 0 (y = g' − g + λ·s with λ = 0), as in the reference.
"""
        + _SHARED_DOC
        + r"""

    Reference: Schraudolph, Yu & Günter 2007 (o-LBFGS); the LODO authors'
    ``OLBFGSMinimizationProcedure`` (``reference/lodo.md`` §2).

    Differs from the reference: pairs with s·y = 0 are skipped (the reference divides by zero);
    the mean runs over the stored pairs, which equals the reference's min(t, memory) pairs
    whenever no pair was skipped.
    """
    )

    _name = "OnlineLBFGS"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        tau: float = 1e4,
        eps: float = 1e-10,
        history_size: int = 48,
    ) -> None:
        super().__init__(params, _validated(lr, tau, eps, history_size))

    def _initial_scale(
        self, group: dict[str, Any], s_history: list[torch.Tensor], y_history: list[torch.Tensor]
    ) -> torch.Tensor:
        ratios = [torch.dot(s, y) / torch.dot(y, y) for s, y in zip(s_history, y_history, strict=True)]
        return torch.stack(ratios).mean()
