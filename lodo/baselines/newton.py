"""Newton's method with the exact dense Hessian, for small problems."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lodo._validation import check_positive_int
from lodo.baselines._common import ExactHessianOptimizer, solve_or_pinv

__all__ = ["Newton", "newton_step"]


def newton_step(hessian: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The step −H⁻¹·g (guarded solve: see ``solve_or_pinv``)."""
    return solve_or_pinv(hessian, grad).neg_()


class Newton(ExactHessianOptimizer):
    r"""Undamped Newton's method: x ← x − H⁻¹·g with the exact Hessian.

    Algorithm, each step (1 loss evaluation)::

        loss = closure();  g = ∇loss;  H = ∂g/∂x (exact, by autograd)
        x ← x − H⁻¹·g       (a linear solve; on a quadratic this is its minimum in one step)

    Args:
        params: tensors or a single parameter-group dict (one device, one floating dtype).
        max_dim: the largest n accepted, integer >= 1 (default 4096; H takes n² numbers and n
            backward passes). A larger n → ValueError naming ``max_dim`` and n.

    Closure (required; missing → ValueError naming ``closure``): it returns the loss tensor
    with its graph and does NOT call ``backward()``. The optimizer differentiates it twice,
    sets ``.grad`` to g (at the parameters before the step) and returns the loss (detached).

    Singular H: when LU meets a zero pivot the step is the minimum-norm least-squares solution
    −pinv(H)·g; a nearly singular H is solved as is (possibly a huge step). At a saddle or a
    maximum Newton's step goes there too: it does not check that H is positive definite.

    Reference: the "Newton (optimal)" row of the LODO paper, which was not run but computed
    analytically for the noisy quadratic bowl (``reference/lodo.md`` §2, §4.1).

    Non-finite gradients or Hessians: not passed to LAPACK; the step is NaN, the parameters
    become NaN, and the next loss is non-finite, which marks the trial diverged.
    """

    def __init__(self, params: Iterable[Any], max_dim: int = 4096) -> None:
        super().__init__(params, {"max_dim": check_positive_int("max_dim", max_dim)})

    def _direction(self, hessian, grad, group):
        return newton_step(hessian, grad)
