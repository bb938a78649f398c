"""LODO: Learning to Optimize with a Deep Optimizer (Liao et al., TMLR 2023), and its ablations."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from ._flat import add_flat_, all_params, check_params, flat_grads, param_list
from ._validation import check_choice, check_decay, check_nonnegative, check_positive
from .meta_optimizers import EPS_CONVENTIONS, adam_meta_update_, sgd_meta_update_
from .preconditioners import BlockPermutation, Diagonal, Preconditioner, Residual, Scalar

__all__ = [
    "LODO",
    "LODOSGD",
    "LODODiagonal",
    "LODOGlobal",
    "LODONoMomentum",
    "LODOResiduals",
    "lodo_update",
]

META_OPTIMIZERS = ("adam", "sgd")
_STATE_KEY = "lodo"  # LODO's state is one flat-vector state, not per parameter


def lodo_update(
    grad: torch.Tensor,
    state: dict,
    cache: dict,
    *,
    preconditioner: Preconditioner,
    lr: float,
    meta_lr: float,
    beta: float,
    meta_optimizer: str,
    meta_betas: tuple[float, float],
    meta_eps: float,
    eps_convention: str,
) -> torch.Tensor:
    """One LODO iteration on the flat gradient g at the current point; returns the step s.

    Order (reference/lodo.md §1.4), with m the momentum of the step taken last time:
      1. h = ∂(gᵀ G(θ)m)/∂θ, the hypergradient of this loss through the last step only;
      2. θ ← meta-optimizer(θ, h)  (the first call's h is zero but still counts a step);
      3. m ← βm + (1 − β)g         (an EMA without bias correction);
      4. s = G(θ)m = −α·P(θ)m      (``cache`` keeps what step 1 of the next call needs).
    ``state`` holds ``theta``, the preconditioner buffers, ``momentum``, ``step`` and the
    meta-optimizer slots, all updated in place.
    """
    theta, momentum = state["theta"], state["momentum"]
    buffers = {k: state[k] for k in state["buffer_keys"]}
    if state["step"] > 0:
        hypergrad = preconditioner.hypergradient(theta, buffers, momentum, grad, cache)
        hypergrad.mul_(-lr)
        if meta_optimizer == "adam":
            adam_meta_update_(
                theta,
                hypergrad,
                state["exp_avg"],
                state["exp_avg_sq"],
                step=state["step"] + 1,
                lr=meta_lr,
                beta1=meta_betas[0],
                beta2=meta_betas[1],
                eps=meta_eps,
                eps_convention=eps_convention,
            )
        else:
            sgd_meta_update_(theta, hypergrad, lr=meta_lr)
    # On the first call m = 0: the hypergradient is exactly zero, and an Adam step on a zero
    # gradient from zero slots leaves θ and the slots unchanged, so only the count advances.
    state["step"] += 1
    momentum.mul_(beta).add_(grad, alpha=1.0 - beta)
    return preconditioner.direction(theta, buffers, momentum, cache).mul_(-lr)


class LODO(Optimizer):
    r"""LODO (Liao, Dangovski, Foerster, Soljačić, TMLR 2023), as in the authors' code.

    All parameters of all groups form one vector x ∈ Rⁿ. Each :meth:`step` reads the gradient
    g already in ``.grad`` (one model evaluation per step, like every torch optimizer) and

    .. code-block:: text

        h  = ∂(gᵀ G(θ) m)/∂θ              hypergradient through the last step
        θ ← Adam(θ, h; meta_lr)           Keras ε convention by default
        m ← β m + (1 − β) g
        x ← x + G(θ) m,   G(θ) = −α Πᵀ AᵀA Π   (see ``lodo.preconditioners.BlockPermutation``)

    G(θ₀) = −αI, so LODO starts as SGD with EMA momentum and step α. The first step is a zero
    step (m₀ = 0), as in the reference.

    Args:
        params: parameters or parameter groups; every group must share the hyperparameters.
        lr: α, the initial learning rate (fixed, never learned). Default 1.0.
        meta_lr: η, the meta-optimizer's learning rate. Default 1e-3.
        beta: β, the momentum EMA decay in [0, 1). Default 0.9.
        block_size: b, the block size of the block-diagonal layers. Default 4.
        depth: N, the number of layers of A (AᵀA has 2N). Default 16.
        meta_optimizer: ``"adam"`` (the paper) or ``"sgd"`` (the LODO-SGD ablation).
        meta_betas, meta_eps: the meta Adam's β₁, β₂ and ε (Keras defaults 0.9, 0.999, 1e-7).
        eps_convention: ``"keras"`` (ε outside the bias-corrected √v, as the authors' Keras
            Adam) or ``"torch"`` (as torch.optim.Adam).
        meta_dtype: dtype of θ, the momentum and the meta slots (float64 as in the reference;
            float32 halves the memory). The step is cast to each parameter's dtype.
        seed: an int or a ``torch.Generator`` for the permutations and the orthogonal init.
        preconditioner: replaces the block-permutation network (used by the ablations).

    Non-finite gradients: :meth:`step` raises ``FloatingPointError`` before touching any state
    (θ, slots, momentum and x stay as they were), so a diverged run never leaves a silently
    corrupted optimizer behind; a trial runner records the run as diverged.

    Differs from the reference: nothing in the arithmetic. State lives under one key of
    ``self.state`` (not per parameter) so that ``load_state_dict`` keeps the meta dtype.
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        meta_lr: float = 1e-3,
        beta: float = 0.9,
        *,
        block_size: int = 4,
        depth: int = 16,
        meta_optimizer: str = "adam",
        meta_betas: tuple[float, float] = (0.9, 0.999),
        meta_eps: float = 1e-7,
        eps_convention: str = "keras",
        meta_dtype: torch.dtype = torch.float64,
        seed: int | torch.Generator | None = None,
        preconditioner: Preconditioner | None = None,
    ):
        check_nonnegative("lr", lr)
        check_nonnegative("meta_lr", meta_lr)
        check_decay("beta", beta)
        check_choice("meta_optimizer", meta_optimizer, META_OPTIMIZERS)
        check_decay("meta_betas[0]", meta_betas[0])
        check_decay("meta_betas[1]", meta_betas[1])
        check_positive("meta_eps", meta_eps)
        check_choice("eps_convention", eps_convention, EPS_CONVENTIONS)
        if meta_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid meta_dtype: {meta_dtype} (allowed: torch.float32 | torch.float64)")
        self.preconditioner = preconditioner or BlockPermutation(block_size, depth)
        defaults = dict(
            lr=lr,
            meta_lr=meta_lr,
            beta=beta,
            meta_optimizer=meta_optimizer,
            meta_betas=tuple(meta_betas),
            meta_eps=meta_eps,
            eps_convention=eps_convention,
        )
        super().__init__(param_list(params, type(self).__name__), defaults)
        flat = all_params(self.param_groups)
        check_params(flat, type(self).__name__)
        for group in self.param_groups[1:]:
            differing = [k for k in defaults if group[k] != self.param_groups[0][k]]
            if differing:
                raise ValueError(
                    f"Invalid param_groups: {differing} differ between groups "
                    "(allowed: LODO treats all parameters as one vector, so groups share them)"
                )
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator()
        if isinstance(seed, int):
            generator.manual_seed(seed)
        elif seed is None:
            generator.seed()
        device = flat[0].device
        n = sum(p.numel() for p in flat)
        theta, buffers = self.preconditioner.init(n, dtype=meta_dtype, device=device, generator=generator)
        state = {
            "step": 0,
            "theta": theta,
            "momentum": torch.zeros(n, dtype=meta_dtype, device=device),
            "buffer_keys": tuple(buffers),
            **buffers,
        }
        if meta_optimizer == "adam":
            state["exp_avg"] = torch.zeros_like(theta)
            state["exp_avg_sq"] = torch.zeros_like(theta)
        self.state[_STATE_KEY] = state
        self._cache: dict = {}
        self.register_load_state_dict_post_hook(_restore_flat_state)

    @property
    def meta_state(self) -> dict:
        """θ, momentum, step count, buffers and meta slots (the live tensors)."""
        return self.state[_STATE_KEY]

    @torch.no_grad()
    def step(self, closure=None):
        """One LODO iteration using the gradients in ``.grad``; ``closure`` (optional) is called
        first under ``enable_grad`` to compute them, as in torch.optim."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = all_params(self.param_groups)
        state = self.meta_state
        grad = flat_grads(params, state["momentum"].dtype)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                f"LODO step {state['step']}: non-finite gradient; optimizer state left unchanged"
            )
        group = self.param_groups[0]
        step = lodo_update(
            grad,
            state,
            self._cache,
            preconditioner=self.preconditioner,
            lr=group["lr"],
            meta_lr=group["meta_lr"],
            beta=group["beta"],
            meta_optimizer=group["meta_optimizer"],
            meta_betas=group["meta_betas"],
            meta_eps=group["meta_eps"],
            eps_convention=group["eps_convention"],
        )
        add_flat_(params, step)
        return loss

    @torch.no_grad()
    def precondition(self, vectors: torch.Tensor) -> torch.Tensor:
        """G(θ)v = −α·P(θ)v for each row of a (k, n) tensor (Hessian-approximation metrics)."""
        state = self.meta_state
        buffers = {k: state[k] for k in state["buffer_keys"]}
        theta = state["theta"]
        out = self.preconditioner.apply(theta, buffers, vectors.to(theta.dtype))
        return out.mul_(-self.param_groups[0]["lr"])


def _restore_flat_state(optimizer: LODO) -> None:
    """After ``load_state_dict``: own copies on the parameters' device, in the saved dtype.

    torch copies state under non-parameter keys as is (no cast, no move, shared tensors);
    the cached activations of the last step are derived state and are recomputed.
    """
    device = all_params(optimizer.param_groups)[0].device
    state = optimizer.state[_STATE_KEY]
    optimizer.state[_STATE_KEY] = {
        k: (v.detach().clone().to(device) if torch.is_tensor(v) else v) for k, v in state.items()
    }
    optimizer._cache = {}


class LODODiagonal(LODO):
    """LODO-Diagonal: G = −α·diag(w), w ∈ Rⁿ learned from ones (n meta-parameters)."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9, **kwargs):
        super().__init__(params, lr, meta_lr, beta, preconditioner=Diagonal(), **kwargs)


class LODOGlobal(LODO):
    """LODO-Global: G = −α·w·I with one learned scalar w (the paper's version; the authors'
    experiment map built the diagonal class under this name)."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9, **kwargs):
        super().__init__(params, lr, meta_lr, beta, preconditioner=Scalar(), **kwargs)


class LODOResiduals(LODO):
    """LODO-Residuals: width 2n, ``residual_depth`` (64) residual layers, a middle diagonal."""

    def __init__(
        self,
        params,
        lr: float = 1.0,
        meta_lr: float = 1e-3,
        beta: float = 0.9,
        *,
        residual_depth: int = 64,
        **kwargs,
    ):
        super().__init__(params, lr, meta_lr, beta, preconditioner=Residual(residual_depth), **kwargs)


class LODONoMomentum(LODO):
    """LODO-No-Momentum: standard LODO with β = 0, so the step uses the latest gradient.

    The paper's version; the authors' tuning runs used the residual network here by mistake.
    """

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, **kwargs):
        super().__init__(params, lr, meta_lr, 0.0, **kwargs)


class LODOSGD(LODO):
    """LODO-SGD: LODO whose meta-optimizer is plain SGD (no momentum) with rate ``meta_lr``."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9, **kwargs):
        super().__init__(params, lr, meta_lr, beta, meta_optimizer="sgd", **kwargs)
