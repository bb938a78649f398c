"""Full inverse-Hessian BFGS without line search, as the LODO authors ran it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lodo._flat import add_flat_, flat_grads, param_list
from lodo._validation import check_nonnegative, check_positive, check_positive_int
from lodo.baselines._common import check_dim, flat_group

__all__ = ["BFGS", "bfgs_update_"]


def bfgs_update_(hessian_inv: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """In place: H ← H + ((s·y + yᵀHy)/(s·y)²)·s sᵀ − (H y sᵀ + s yᵀ H)/(s·y), for symmetric H.

    Needs s·y ≠ 0. Returns H.
    """
    sy = torch.dot(s, y)
    hy = hessian_inv @ y
    hessian_inv.addr_(s, s, alpha=(sy + torch.dot(y, hy)) / sy**2)
    hessian_inv.addr_(hy, s, alpha=-1.0 / sy)
    hessian_inv.addr_(s, hy, alpha=-1.0 / sy)
    return hessian_inv


class BFGS(torch.optim.Optimizer):
    r"""BFGS on the flat parameter vector with a dense inverse-Hessian estimate and a fixed step.

    Algorithm (H = h0_scale·I at the start; g = the gradient in ``.grad``)::

        if a previous step exists:  y = g − g_prev;  H ← BFGS update of H with (s, y)
        p = −H·g;   s = lr·p;   x ← x + s

    (The reference evaluates g once before its loop; here the caller's first gradient plays that
    role, so the evaluations per step are 1, and the first step is p = −h0_scale·g.)

    Args:
        params: tensors or a single parameter-group dict (one device, one floating dtype).
        lr: step size, finite and >= 0 (default 0.01).
        h0_scale: scale of H₀, finite and > 0 (default 1.0).
        max_dim: the largest n accepted, integer >= 1 (default 10_000; H takes n² numbers).
            A larger n → ValueError naming ``max_dim`` and n.

    Closure: optional, as in torch (called first, under grad mode; its loss is returned).

    Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., eq. (6.17); the LODO
    authors' ``BFGSMinimizationProcedure`` (``reference/lodo.md`` §2).

    Differs from the reference: H is kept in the parameters' dtype (the reference always used
    float32); the update is skipped when s·y = 0 or is non-finite (the reference divides by
    zero); pairs with s·y < 0 are used, as in the reference.

    Non-finite gradients: not checked: p and the parameters become non-finite, the H update is
    skipped, and the next loss is non-finite, which marks the trial diverged.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 0.01, h0_scale: float = 1.0, max_dim: int = 10_000
    ) -> None:
        lr = check_nonnegative("lr", lr)
        h0_scale = check_positive("h0_scale", h0_scale)
        max_dim = check_positive_int("max_dim", max_dim)
        super().__init__(param_list(params, "BFGS"), {"lr": lr, "h0_scale": h0_scale, "max_dim": max_dim})
        flat_group(self, "BFGS")
        check_dim(sum(p.numel() for p in self.param_groups[0]["params"]), max_dim, "BFGS")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step from the gradients in ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        params = group["params"]
        grad = flat_grads(params)
        n = grad.numel()
        check_dim(n, group["max_dim"], "BFGS")
        state = self.state[params[0]]
        if "hessian_inv" not in state:
            state["step"] = 0
            state["hessian_inv"] = torch.eye(n, dtype=grad.dtype, device=grad.device).mul_(group["h0_scale"])
        hessian_inv = state["hessian_inv"]
        if "prev_grad" in state:
            s, y = state["prev_s"], grad - state["prev_grad"]
            sy = torch.dot(s, y)
            if bool(torch.isfinite(sy) & (sy != 0)):
                bfgs_update_(hessian_inv, s, y)
        s = (hessian_inv @ grad).mul_(-group["lr"])
        add_flat_(params, s)
        state["prev_grad"], state["prev_s"] = grad, s
        state["step"] += 1
        return loss
