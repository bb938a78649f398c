"""Private helpers shared by the baselines: argument checks the shared validators lack, closures,
dense Hessians and the guarded linear solve of the second-order methods."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lodo._flat import add_flat_, check_params, param_list
from lodo._validation import check_decay, fail


def check_betas(betas: Sequence[float]) -> tuple[float, float]:
    """A pair (β1, β2), each in [0, 1)."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        fail("betas", repr(betas), "a pair (beta1, beta2) of numbers in [0, 1)")
    return check_decay("betas[0]", betas[0]), check_decay("betas[1]", betas[1])


def flat_group(optimizer: torch.optim.Optimizer, name: str) -> None:
    """The flat-vector optimizers take one parameter group, one device and one floating dtype.

    One group because their hyperparameters act on the whole vector (as ``torch.optim.LBFGS``);
    one dtype because their state (history, dense matrices) is kept in the parameters' dtype and
    ``load_state_dict`` casts it to the dtype of the first parameter.
    """
    if len(optimizer.param_groups) != 1:
        fail("params", f"{len(optimizer.param_groups)} parameter groups", f"{name} takes exactly one group")
    params = optimizer.param_groups[0]["params"]
    check_params(params, name)
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1 or not next(iter(dtypes)).is_floating_point:
        fail("params", f"dtypes {sorted(map(str, dtypes))}", "one floating-point dtype")


def check_dim(n: int, max_dim: int, name: str) -> None:
    """Dense n×n methods refuse vectors longer than ``max_dim``."""
    if n > max_dim:
        fail(
            "params",
            f"n = {n} parameters",
            f"n <= max_dim = {max_dim}; {name} stores dense n x n matrices, raise max_dim if memory allows",
        )


def require_closure(closure: Callable[[], Any] | None, name: str, contract: str) -> Callable[[], Any]:
    """The optimizers that evaluate the loss themselves refuse a missing closure."""
    if closure is None or not callable(closure):
        fail("closure", repr(closure), f"{name}.step needs a closure that {contract}")
    return closure


def set_flat_grads(params: list[torch.Tensor], flat: torch.Tensor) -> None:
    """``p.grad`` ← the matching slice of ``flat`` for every parameter."""
    offset = 0
    for p in params:
        k = p.numel()
        p.grad = flat[offset : offset + k].view_as(p).to(p.dtype).clone()
        offset += k


def loss_grad_hessian(
    closure: Callable[[], torch.Tensor], params: list[torch.Tensor], name: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss, the flat gradient g and the exact dense Hessian H = ∂g/∂x, all detached.

    ``closure`` returns the loss with its graph and has not called ``backward``. H is computed
    row by row from g's graph, batched with ``is_grads_batched`` (vmap over the backward pass);
    when some operation has no batching rule, it falls back to a loop of n backward passes.
    """
    with torch.enable_grad():
        loss = closure()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            fail(
                "closure",
                "its return value",
                f"{name}.step needs a closure returning the scalar loss tensor with its graph "
                "(without calling backward)",
            )
        grads = torch.autograd.grad(
            loss, params, create_graph=True, allow_unused=True, materialize_grads=True
        )
        flat_g = torch.cat([g.reshape(-1) for g in grads])
        n = flat_g.numel()
        if not flat_g.requires_grad:  # the loss is linear in x
            hessian = torch.zeros(n, n, dtype=flat_g.dtype, device=flat_g.device)
        else:
            eye = torch.eye(n, dtype=flat_g.dtype, device=flat_g.device)
            try:
                rows = torch.autograd.grad(
                    flat_g,
                    params,
                    grad_outputs=eye,
                    is_grads_batched=True,
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
                hessian = torch.cat([r.reshape(n, -1) for r in rows], dim=1)
            except RuntimeError:  # an op without a vmap batching rule: one backward pass per row
                hessian = torch.stack(
                    [
                        torch.cat(
                            [
                                r.reshape(-1)
                                for r in torch.autograd.grad(
                                    flat_g,
                                    params,
                                    grad_outputs=eye[i],
                                    retain_graph=True,
                                    allow_unused=True,
                                    materialize_grads=True,
                                )
                            ]
                        )
                        for i in range(n)
                    ]
                )
    return loss.detach(), flat_g.detach(), hessian.detach()


def solve_or_pinv(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix⁻¹·rhs for a symmetric matrix, with two guards.

    * Non-finite input: returns a NaN vector without calling LAPACK (whose behaviour on NaN is
      undefined), so the parameters become NaN and the trial is marked diverged by its loss.
    * Exactly singular matrix (LU meets a zero pivot): the minimum-norm least-squares solution
      pinv(matrix)·rhs. A nearly singular matrix is solved as is and may give a huge step.
    """
    if not bool(torch.isfinite(matrix).all() & torch.isfinite(rhs).all()):
        return torch.full_like(rhs, float("nan"))
    solution, info = torch.linalg.solve_ex(matrix, rhs)
    if int(info) != 0:
        solution = torch.linalg.pinv(matrix, hermitian=True) @ rhs
    return solution


class ExactHessianOptimizer(torch.optim.Optimizer):
    """Bookkeeping shared by the dense second-order methods (Newton, Levenberg–Marquardt).

    One flat parameter group of at most ``max_dim`` numbers; :meth:`step` needs a closure that
    returns the loss with its graph (one evaluation), computes g and the exact Hessian H by
    autograd, sets ``.grad`` to g and adds ``self._direction(H, g, group)`` to the parameters.
    """

    CLOSURE_CONTRACT = "returns the loss tensor with its graph, without calling backward()"

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        super().__init__(param_list(params, name), defaults)
        flat_group(self, name)
        check_dim(sum(p.numel() for p in self.param_groups[0]["params"]), defaults["max_dim"], name)

    def _direction(self, hessian: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step; returns the loss at the parameters before the step."""
        name = type(self).__name__
        closure = require_closure(closure, name, self.CLOSURE_CONTRACT)
        group = self.param_groups[0]
        params = group["params"]
        check_dim(sum(p.numel() for p in params), group["max_dim"], name)
        loss, grad, hessian = loss_grad_hessian(closure, params, name)
        with torch.no_grad():
            set_flat_grads(params, grad)
            add_flat_(params, self._direction(hessian, grad, group))
        state = self.state[params[0]]
        state["step"] = state.get("step", 0) + 1
        return loss
