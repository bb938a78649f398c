"""Meta-optimizers of LODO: the update applied to the preconditioner's weights θ.

Both are plain in-place functions on one tensor, so the LODO class only does bookkeeping.
The paper's code used Keras Adam (ε outside the bias-corrected square root, "epsilon-hat")
for LODO and Keras SGD for the LODO-SGD ablation.
"""

from __future__ import annotations

import math

import torch

EPS_CONVENTIONS = ("keras", "torch")


def adam_meta_update_(
    theta: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    eps_convention: str = "keras",
) -> None:
    """One Adam step on ``theta`` (``step`` is the 1-based count including this one).

    ``keras``: θ ← θ − lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m/(√v + ε)   (the authors' TF/Keras Adam)
    ``torch``: θ ← θ − lr/(1−β₁ᵗ) · m/(√v/√(1−β₂ᵗ) + ε)   (torch.optim.Adam)
    The two differ only in where ε enters; hypergradients are tiny, so it matters early on.
    """
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    if eps_convention == "keras":
        denom = exp_avg_sq.sqrt().add_(eps)
        theta.addcdiv_(exp_avg, denom, value=-lr * bias2_sqrt / bias1)
    else:
        denom = exp_avg_sq.sqrt().div_(bias2_sqrt).add_(eps)
        theta.addcdiv_(exp_avg, denom, value=-lr / bias1)


def sgd_meta_update_(theta: torch.Tensor, grad: torch.Tensor, *, lr: float) -> None:
    """θ ← θ − lr·h (Keras SGD without momentum)."""
    theta.add_(grad, alpha=-lr)
