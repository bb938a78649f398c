"""RMSprop with the Keras / TensorFlow semantics (ε outside the square root without momentum,
inside it with momentum)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lodo._flat import param_list
from lodo._validation import check_decay, check_nonnegative

__all__ = ["KerasRMSprop", "keras_rmsprop"]


def keras_rmsprop(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    square_avgs: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor] | None,
    *,
    lr: float,
    rho: float,
    momentum: float,
    eps: float,
) -> None:
    """In place: the Keras RMSprop update of each parameter (see :class:`KerasRMSprop`)."""
    for i, (p, g, v) in enumerate(zip(params, grads, square_avgs, strict=True)):
        v.mul_(rho).addcmul_(g, g, value=1.0 - rho)
        if momentum > 0:
            buf = momentum_buffers[i]
            buf.mul_(momentum).addcdiv_(g, v.add(eps).sqrt_(), value=lr)
            p.sub_(buf)
        else:
            p.addcdiv_(g, v.sqrt().add_(eps), value=-lr)


class KerasRMSprop(torch.optim.Optimizer):
    r"""RMSprop as ``tf.keras.optimizers.RMSprop`` (TF 2, not centered) computes it.

    Algorithm, for each parameter (v and buf start at 0)::

        v ← ρ·v + (1 − ρ)·g²
        momentum = 0:  x ← x − lr·g/(√v + ε)
        momentum > 0:  buf ← μ·buf + lr·g/√(v + ε);  x ← x − buf      (TF's ApplyRMSProp kernel)

    Why not ``torch.optim.RMSprop``: torch always adds ε outside the square root, √v + ε. That
    equals Keras for momentum = 0 but not for momentum > 0, where TF's kernel uses √(v + ε); a
    subclass would have to replace the whole update, so this is a small class of its own.

    Args:
        params: tensors or parameter-group dicts.
        lr: learning rate, finite and >= 0 (default 1e-3).
        rho: decay of the squared-gradient average, any finite ρ >= 0 (default 0.9). ρ > 1 is
            accepted on purpose: the authors' GA samples ρ in log space, so ρ > 1 occurs; then
            1 − ρ < 0, v can turn negative, √v is NaN and the run diverges, as it did for them.
        momentum: μ in [0, 1) (default 0.0).
        eps: ε, finite and >= 0 (default 1e-7, the Keras default).

    Closure: optional, as in torch (called first, under grad mode; its loss is returned).

    Reference: Tieleman & Hinton 2012 (lecture 6.5); Keras ``RMSprop`` and TF's
    ``ResourceApplyRMSProp``; the LODO authors' baseline (``reference/lodo.md`` §2, §7.10).

    Non-finite gradients: not checked: v (and buf) become non-finite, so do the parameters, and
    the next loss is non-finite, which marks the trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        rho: float = 0.9,
        momentum: float = 0.0,
        eps: float = 1e-7,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        rho = check_nonnegative("rho", rho)
        momentum = check_decay("momentum", momentum)
        eps = check_nonnegative("eps", eps)
        defaults = {"lr": lr, "rho": rho, "momentum": momentum, "eps": eps}
        super().__init__(param_list(params, "KerasRMSprop"), defaults)

    def _init_group(self, group: dict[str, Any]) -> tuple[list, list, list, list | None]:
        params, grads, square_avgs, momentum_buffers = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "square_avg" not in state:
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["momentum"] > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            square_avgs.append(state["square_avg"])
            momentum_buffers.append(state.get("momentum_buffer"))
        return params, grads, square_avgs, momentum_buffers if group["momentum"] > 0 else None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step from the gradients in ``.grad``; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, square_avgs, momentum_buffers = self._init_group(group)
            keras_rmsprop(
                params,
                grads,
                square_avgs,
                momentum_buffers,
                lr=group["lr"],
                rho=group["rho"],
                momentum=group["momentum"],
                eps=group["eps"],
            )
        return loss
