"""LARS as the LODO authors implemented it: squared-polynomial decay, no trust coefficient."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lodo._flat import param_list
from lodo._validation import check_decay, check_nonnegative, check_positive_int

__all__ = ["PaperLARS", "paper_lars"]


def paper_lars(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    steps: list[int],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    total_steps: int,
) -> None:
    """In place: the paper's LARS update of each tensor; ``steps[i]`` = its completed steps."""
    for p, g, u, t in zip(params, grads, momentum_buffers, steps, strict=True):
        progress = min(1.0, t / total_steps)
        gamma = lr * (1.0 - progress) ** 2
        x_norm = torch.linalg.vector_norm(p)
        denom = torch.linalg.vector_norm(g) + weight_decay * x_norm
        trust = torch.where((x_norm > 0) & (denom > 0), x_norm / denom, torch.ones_like(x_norm))
        u.mul_(momentum).add_(g.add(p, alpha=weight_decay).mul_(trust), alpha=gamma)
        p.sub_(u)


class PaperLARS(torch.optim.Optimizer):
    r"""LARS with the LODO authors' schedule and trust ratio, one "layer" per parameter tensor.

    Algorithm, for each parameter tensor ℓ (u starts at 0; t = completed steps of ℓ)::

        progress = min(1, t/total_steps);   γ = lr·(1 − progress)²
        λ = ‖x‖/(‖g‖ + wd·‖x‖)              (λ = 1 when ‖x‖ = 0 or the denominator is 0)
        u ← μ·u + γ·λ·(g + wd·x)
        x ← x − u

    Why not ``pytorch_optimizer.LARS`` (4.1): it multiplies λ by a trust coefficient (can be set
    to 1), but it leaves 1-D tensors (biases) unscaled and without weight decay, applies the
    learning rate outside the momentum buffer (x ← x − lr·u with u ← μu + λ(g + wd·x), which
    differs once lr is scheduled), has no (1 − progress)² decay, and writes into ``p.grad``.

    Args:
        params: tensors or parameter-group dicts.
        lr: initial global learning rate, finite and >= 0 (default 1e-3).
        momentum: μ in [0, 1) (default 0.9).
        weight_decay: wd, finite and >= 0 (default 5e-4).
        total_steps: the run length in ``step()`` calls (keyword-only, required, integer >= 1);
            γ reaches 0 after ``total_steps`` steps and stays there (u then only decays).

    Closure: optional, as in torch (called first, under grad mode; its loss is returned).

    Reference: You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks";
    the LODO authors' ``LARSMinimizationProcedure`` (``reference/lodo.md`` §2, §3.7, §7.10).

    Differs from the reference:

    * Segments: the authors split the flat vector into the (weight, bias) pairs of their MNIST
      CNN (62 segments, reused unchanged for ResNet-18; one per coordinate on Rosenbrock). Here
      each parameter tensor is its own segment (torch's per-tensor convention).
    * λ = 1 when ‖x‖ = 0 or ‖g‖ + wd·‖x‖ = 0; the authors' formula gives 0 (a zero tensor never
      moves) or 0/0 = NaN there.
    * progress counts completed ``step()`` calls of this optimizer (t/total_steps, t = 0 on the
      first step); the authors used the recorder's completed fraction of the run (§3.7), which in
      final runs is the minimum of the time and step fractions.

    Non-finite gradients: not checked: u becomes non-finite, so does the whole tensor, and the
    next loss is non-finite, which marks the trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        *,
        total_steps: int,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        momentum = check_decay("momentum", momentum)
        weight_decay = check_nonnegative("weight_decay", weight_decay)
        total_steps = check_positive_int("total_steps", total_steps)
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "total_steps": total_steps}
        super().__init__(param_list(params, "PaperLARS"), defaults)

    def _init_group(self, group: dict[str, Any]) -> tuple[list, list, list, list]:
        params, grads, momentum_buffers, steps = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            momentum_buffers.append(state["momentum_buffer"])
            steps.append(state["step"])
            state["step"] += 1
        return params, grads, momentum_buffers, steps

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step from the gradients in ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            paper_lars(
                *self._init_group(group),
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                total_steps=group["total_steps"],
            )
        return loss
