"""Adam with the Keras "epsilon-hat" convention, delegating to ``torch.optim.Adam``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lodo._flat import param_list
from lodo._validation import check_nonnegative
from lodo.baselines._common import check_betas

__all__ = ["KerasAdam", "torch_eps"]


def torch_eps(eps: float, beta2: float, step: int) -> float:
    """The ``torch.optim.Adam`` ε that reproduces Keras' ε at step ``step`` (1-based): ε/√(1−β2ᵗ).

    torch divides by √v̂ + ε_torch with v̂ = v/(1−β2ᵗ); Keras by √v + ε. Multiplying the torch
    denominator by √(1−β2ᵗ) shows the two agree when ε_torch = ε/√(1−β2ᵗ).
    """
    return eps / math.sqrt(1.0 - beta2**step)


class KerasAdam(torch.optim.Adam):
    r"""Adam as Keras (TF 2) computes it: ε is added to √v, not to the bias-corrected √v̂.

    Algorithm, for each parameter, at step t = 1, 2, …::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        x ← x − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε)

    Implementation: before delegating to ``torch.optim.Adam.step`` the group's ``eps`` is set to
    :func:`torch_eps` (ε/√(1−β2ᵗ)) for the coming step and restored afterwards, so torch's own
    kernels (for-loop or foreach, CPU or CUDA) compute exactly the Keras update up to rounding,
    and ``param_groups[i]["eps"]`` always shows the Keras ε. No amsgrad, no weight decay.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate, finite and >= 0 (default 1e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: the Keras ε, finite and >= 0 (default 1e-7, the Keras default).

    Closure: optional, as in torch (called first, under grad mode; its loss is returned).

    Reference: Kingma & Ba 2015, Algorithm 1 with the "epsilon hat" remark of §2; Keras
    ``tf.keras.optimizers.Adam``; the LODO authors' baseline (``reference/lodo.md`` §2, §7.3).

    Differs from the reference: t is torch's per-parameter step count, taken from the first
    parameter of the group that has a gradient. Keras counts ``apply_gradients`` calls globally;
    the two agree whenever every parameter has a gradient at every step (lodotune's loops).

    Non-finite gradients: not checked (as every baseline here): m and v become non-finite, so do
    the parameters, and the next loss is non-finite, which marks the trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-7,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        betas = check_betas(betas)
        eps = check_nonnegative("eps", eps)
        super().__init__(param_list(params, "KerasAdam"), lr=lr, betas=betas, eps=eps)

    def _coming_step(self, group: dict[str, Any]) -> int:
        for p in group["params"]:
            if p.grad is not None:
                state = self.state.get(p)
                return int(state["step"]) + 1 if state and "step" in state else 1
        return 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Keras-Adam step from the gradients in ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:  # first, so that t is read from the parameters it gave gradients
            with torch.enable_grad():
                loss = closure()
        keras_eps = [group["eps"] for group in self.param_groups]
        try:
            for group in self.param_groups:
                group["eps"] = torch_eps(group["eps"], group["betas"][1], self._coming_step(group))
            super().step()
        finally:
            for group, eps in zip(self.param_groups, keras_eps, strict=True):
                group["eps"] = eps
        return loss
