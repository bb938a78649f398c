"""Levenberg–Marquardt on the residual "gradient = 0" with the exact Hessian, as the LODO authors ran it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lodo._validation import check_nonnegative, check_positive_int
from lodo.baselines._common import ExactHessianOptimizer, solve_or_pinv

__all__ = ["LevenbergMarquardt", "levenberg_marquardt_step"]


def levenberg_marquardt_step(hessian: torch.Tensor, grad: torch.Tensor, *, lam: float) -> torch.Tensor:
    """The step −(H² + λ·diag(H²))⁻¹·H·g (guarded solve: see ``solve_or_pinv``)."""
    h2 = hessian @ hessian
    system = h2 + lam * torch.diag(torch.diagonal(h2))
    return solve_or_pinv(system, hessian @ grad).neg_()


class LevenbergMarquardt(ExactHessianOptimizer):
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
        super().__init__(params, {"lam": lam, "max_dim": check_positive_int("max_dim", max_dim)})

    def _direction(self, hessian, grad, group):
        return levenberg_marquardt_step(hessian, grad, lam=group["lam"])
