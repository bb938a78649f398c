"""Levenberg–Marquardt on the residual "gradient = 0" with the exact Hessian, as the LODO authors ran it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lodo._flat import add_flat_, param_list
from lodo._validation import check_nonnegative, check_positive_int
from lodo.baselines._common import (
    check_dim,
    flat_group,
    loss_grad_hessian,
    require_closure,
    set_flat_grads,
    solve_or_pinv,
)

__all__ = ["LevenbergMarquardt", "levenberg_marquardt_step"]

_CLOSURE_CONTRACT = "returns the loss tensor with its graph, without calling backward()"


def levenberg_marquardt_step(hessian: torch.Tensor, grad: torch.Tensor, *, lam: float) -> torch.Tensor:
    """The step −(H² + λ·diag(H²))⁻¹·H·g (guarded solve: see ``solve_or_pinv``)."""
    h2 = hessian @ hessian
    system = h2 + lam * torch.diag(torch.diagonal(h2))
    return solve_or_pinv(system, hessian @ grad).neg_()


class LevenbergMarquardt(torch.optim.Optimizer):
    r"""Levenberg–Marquardt applied to the residual r(x) = ∇L(x) (Jacobian = the Hessian H).

    Algorithm, each step (1 loss evaluation)::

        loss = closure();  g = ∇loss;  H = ∂g/∂x (exact, by autograd)
        x ← x − (H² + λ·diag(H²))⁻¹·H·g

    λ = 0 gives Newton's step when H is invertible; large λ gives a short, diagonally scaled
    gradient step.

    Args:
        params: tensors or a single parameter-group dict (one device, one floating dtype).
        lam: damping λ, finite and >= 0 (default 1.0).
        max_dim: the largest n accepted, integer >= 1 (default 4096; H takes n² numbers and n
            backward passes). A larger n → ValueError naming ``max_dim`` and n.

    Closure (required; missing → ValueError naming ``closure``): it returns the loss tensor
    with its graph and does NOT call ``backward()``. The optimizer differentiates it twice
    (create_graph; the n Hessian rows are batched with ``is_grads_batched``, with a loop as
    fallback), sets ``.grad`` to g (at the parameters before the step) and returns the loss
    (detached).

    Reference: Levenberg 1944, Marquardt 1963; the LODO authors'
    ``LevenbergMarquardtMinimizationProcedure`` (``reference/lodo.md`` §2).

    Differs from the reference: a linear solve instead of an explicit inverse; an exactly
    singular system (zero pivot) takes the minimum-norm least-squares step via the
    pseudo-inverse instead of failing.

    Non-finite gradients or Hessians: not passed to LAPACK; the step is NaN, the parameters
    become NaN, and the next loss is non-finite, which marks the trial diverged.
    """

    def __init__(self, params: Iterable[Any], lam: float = 1.0, max_dim: int = 4096) -> None:
        lam = check_nonnegative("lam", lam)
        max_dim = check_positive_int("max_dim", max_dim)
        super().__init__(param_list(params, "LevenbergMarquardt"), {"lam": lam, "max_dim": max_dim})
        flat_group(self, "LevenbergMarquardt")
        check_dim(sum(p.numel() for p in self.param_groups[0]["params"]), max_dim, "LevenbergMarquardt")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step; returns the loss at the parameters before the step."""
        closure = require_closure(closure, "LevenbergMarquardt", _CLOSURE_CONTRACT)
        group = self.param_groups[0]
        params = group["params"]
        check_dim(sum(p.numel() for p in params), group["max_dim"], "LevenbergMarquardt")
        loss, grad, hessian = loss_grad_hessian(closure, params, "LevenbergMarquardt")
        with torch.no_grad():
            set_flat_grads(params, grad)
            add_flat_(params, levenberg_marquardt_step(hessian, grad, lam=group["lam"]))
        state = self.state[params[0]]
        state["step"] = state.get("step", 0) + 1
        return loss
