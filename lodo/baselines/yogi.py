"""Yogi as the LODO authors implemented it: ε = 1e−3 and no bias correction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lodo._flat import param_list
from lodo._validation import check_nonnegative
from lodo.baselines._common import check_betas

__all__ = ["PaperYogi", "paper_yogi"]


def paper_yogi(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """In place: the paper's Yogi update of each parameter (see :class:`PaperYogi`)."""
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        g2 = g * g
        v.addcmul_((v - g2).sign_(), g2, value=-(1.0 - beta2))
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)


class PaperYogi(torch.optim.Optimizer):
    r"""Yogi without bias correction, as in the LODO authors' code.

    Algorithm, for each parameter (m and v start at 0)::

        m ← β1·m + (1 − β1)·g
        v ← v − (1 − β2)·sign(v − g²)·g²
        x ← x − lr·m/(√v + ε)

    Why not ``pytorch_optimizer.Yogi`` (4.1): with ``initial_accumulator=0`` its moments start at
    0 as here, but it always divides √v by √(1 − β2ᵗ) (the second-moment bias correction cannot
    be switched off), so its update differs from the paper's at every step; matching it would
    mean rescaling lr and ε per step behind its back. Four lines of update are clearer.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate, finite and >= 0 (default 1e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ε, finite and >= 0 (default 1e-3, fixed in the paper's runs).

    Closure: optional, as in torch (called first, under grad mode; its loss is returned).

    Reference: Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization" (Algorithm 2);
    the LODO authors' ``YogiMinimizationProcedure`` (``reference/lodo.md`` §2, §7.10).

    Differs from the reference (Zaheer et al.): no bias correction and moments initialised at 0
    (the original suggests a small positive v₀); this is the LODO code's variant.

    Non-finite gradients: not checked: m and v become non-finite, so do the parameters, and the
    next loss is non-finite, which marks the trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-3,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        betas = check_betas(betas)
        eps = check_nonnegative("eps", eps)
        super().__init__(param_list(params, "PaperYogi"), {"lr": lr, "betas": betas, "eps": eps})

    def _init_group(self, group: dict[str, Any]) -> tuple[list, list, list, list]:
        params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        return params, grads, exp_avgs, exp_avg_sqs

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step from the gradients in ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            paper_yogi(*self._init_group(group), lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"])
        return loss
