"""Series saddle-free Newton: (|H| + λI)⁻¹g from a truncated series of Hessian-vector products
(Oldewage, Clarke & Hernández-Lobato, TMLR 2024; ``reference/clarke.md`` §4, §7.3)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lodo._flat import param_list
from lodo._validation import check_decay, check_nonnegative, check_positive, check_positive_int, fail
from lodo.adamqlr import (
    CLOSURE_CONTRACT,
    hessian_vector_product,
    loss_and_gradient,
    ratio,
    update_damping,
)
from lodo.baselines._common import flat_group, require_closure

__all__ = [
    "SeriesSFN",
    "SeriesSFNUnadaptive",
    "series_coefficients",
    "series_sfn_direction",
    "wynn_epsilon",
]


def series_coefficients(terms: int, delta: float) -> list[float]:
    """c₀ … c_{K−1}: the Taylor coefficients at x = 0 of 1/(δ + √(1 − x)), in float64.

    From (δ + √(1 − x))·Σ cₖxᵏ = 1 with √(1 − x) = Σ bₖxᵏ (b₀ = 1, bₖ = bₖ₋₁·(k − 3/2)/k):
    c₀ = 1/(1 + δ) and cₖ = −(Σ_{j<k} cⱼ·b_{k−j}) / (1 + δ).

    The reference computes the same numbers by cₖ = (cₖ₋₁ + bₖ)/(1 − δ²), which divides by
    1 − λ²/V: it fails at λ = √V and multiplies rounding errors by 1/(1 − δ²) per term as λ²
    approaches V. This recursion divides by 1 + δ only, so any λ ≥ 0 works (the series still
    converges: the pole at x = 1 − δ² cancels).
    """
    roots = [1.0]
    for k in range(1, terms):
        roots.append(roots[-1] * (k - 1.5) / k)
    coefficients = [1.0 / (1.0 + delta)]
    for k in range(1, terms):
        coefficients.append(-sum(coefficients[j] * roots[k - j] for j in range(k)) / (1.0 + delta))
    return coefficients


def wynn_epsilon(sums: Sequence[torch.Tensor], *, sablonniere: bool = False) -> torch.Tensor | None:
    """The vector ε-algorithm (Wynn) with the Samelson inverse v⁻¹ = v/(vᵀv) over 2a + 1 sums.

    ε₋₁⁽ᵐ⁾ = 0, ε₀⁽ᵐ⁾ = S_m, εₛ⁽ᵐ⁾ = εₛ₋₂⁽ᵐ⁺¹⁾ + c·(εₛ₋₁⁽ᵐ⁺¹⁾ − εₛ₋₁⁽ᵐ⁾)⁻¹; returns ε₂ₐ⁽⁰⁾ (a
    Shanks transform applied a times). c = 1, or ⌊s/2⌋ + 1 with ``sablonniere`` (the modifier the
    reference's configurations ask for and, through a misspelling, never get).

    None when a difference vanishes to rounding (its inverse would be noise: the sums have
    converged, or stalled) or the result is not finite; the caller keeps the last partial sum.
    """
    eps = torch.finfo(sums[0].dtype).eps
    older: list[Any] = [0.0] * len(sums)
    current = list(sums)
    for column in range(1, len(sums)):
        scaling = column // 2 + 1 if sablonniere else 1
        newer = []
        for m in range(len(current) - 1):
            difference = current[m + 1] - current[m]
            norm_sq = torch.dot(difference, difference)
            floor = eps * max(float(current[m + 1].norm()), float(current[m].norm()))
            if not float(norm_sq) > floor**2:
                return None
            newer.append(older[m + 1] + difference.mul_(scaling / norm_sq))
        older, current = current, newer
    return current[0] if bool(torch.isfinite(current[0]).all()) else None


def series_sfn_direction(
    grad: torch.Tensor,
    square_product: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: float,
    damping: float,
    terms: int,
    acceleration_order: int,
    sablonniere: bool = False,
) -> tuple[torch.Tensor, float, bool]:
    """Δ ≈ (|H| + λI)⁻¹g by K = ``terms`` terms of the series; returns (Δ, new V, fell back).

    ``square_product(v)`` is H²v (two Hessian-vector products). With V ≥ λ_max(H²)/2 and
    δ = λ/√V, per eigenvalue 1/(|h| + λ) = V^{−1/2}·Σₖ cₖ(1 − h²/V)ᵏ (:func:`series_coefficients`):

        H²g (term 1);  V ← max(V, ‖H²g‖/‖g‖);  c from δ = λ/√V
        v₀ = g, S₀ = c₀g;  vₖ = vₖ₋₁ − H²vₖ₋₁/V,  Sₖ = Sₖ₋₁ + cₖvₖ   (k = 1 … K−1)
        Δ = V^{−1/2} · ε-algorithm over S_{K−2a−1} … S_{K−1}   (a = 0: S_{K−1})

    2(K − 1) Hessian-vector products. V is a running maximum (the caller keeps it) of a lower
    bound on λ_max(H²). K = 1 computes no product: V is not updated, c₀ not applied, and
    Δ = g/√V, as in the reference (so its tuned K = 1 settings mean the same here). "Fell back":
    the ε-algorithm met a vanishing difference and Δ is the last partial sum.
    """
    if terms == 1:
        return grad / math.sqrt(scale), scale, False
    square = square_product(grad)
    grad_norm = float(grad.norm())
    if grad_norm > 0:
        scale = max(scale, float(square.norm()) / grad_norm)
    coefficients = series_coefficients(terms, damping / math.sqrt(scale))
    sums: deque[torch.Tensor] = deque(maxlen=2 * acceleration_order + 1)
    total = grad * coefficients[0]
    sums.append(total)
    term = grad
    for k in range(1, terms):
        if k > 1:
            square = square_product(term)
        term = term - square / scale
        total = total + coefficients[k] * term
        sums.append(total)
    accelerated = wynn_epsilon(list(sums), sablonniere=sablonniere) if acceleration_order else total
    fell_back = accelerated is None
    return (total if fell_back else accelerated) / math.sqrt(scale), scale, fell_back


class SeriesSFN(torch.optim.Optimizer):
    r"""Saddle-free Newton steps (|H| + λI)⁻¹g from a truncated, accelerated series of H²-products.

    Algorithm, each step (one loss evaluation with its graph, 2(K − 1) Hessian-vector products by
    double backward through it, and one more evaluation when the damping adapts)::

        L₀ = closure();  g = ∇L₀
        Δ = series_sfn_direction(g, v ↦ H(Hv); V, λ, K, a)      ≈ (|H| + λI)⁻¹g, V a running max
        u = lr·Δ + momentum·u_prev;  x ← x − u
        if damping_factor < 1:                                   (the adaptive variant)
            L₁ = closure()                                       same minibatch, no gradient
            ρ = (L₁ − L₀) / ((½lr² − lr)·Δᵀg)                    the model assumes (|H| + λI)Δ = g
            λ ← λ·f if ρ > 3/4;  λ/f if ρ < 1/4;  then λ ≥ min_damping     (f = damping_factor)

    The defaults are the paper's adaptive variant ("Ours (Adaptive)": K = 20, a = 1, λ₀ = 1,
    f = 0.9). The unadaptive variant is ``damping_factor=1`` with a tuned ``lr``, ``momentum``
    and ``damping``: :class:`SeriesSFNUnadaptive`, with that variant's defaults (1.0, 0.5, 1e-4).

    Args:
        params: tensors or one parameter-group dict (one group, one device, one floating dtype:
            the series acts on the flat vector of all parameters).
        lr: the step scale α, finite and >= 0 (default 1.0).
        momentum: μ, heavy-ball on the update, in [0, 1) (default 0.0); must be 0 when the
            damping adapts, since ρ's model covers the step lr·Δ only.
        damping: λ₀, the initial damping, finite and > 0 (default 1.0).
        terms: K, the number of series terms, integer >= 1 (default 20).
        acceleration_order: a, the number of Shanks transforms (ε-algorithm over the last
            2a + 1 partial sums), integer in [0, ⌊(K − 1)/2⌋] (default 1).
        damping_factor: f in (0, 1]; 1 keeps λ fixed and skips the second evaluation (default 0.9).
        min_damping: the floor of λ, finite and >= 0 (default 1e-8).
        initial_scale: V₀, the initial scale, finite and > 0 (default 100).
        sablonniere: scale the ε-algorithm's inverses by ⌊s/2⌋ + 1 (default False, see below).

    Closure (required; missing → ValueError naming ``closure``): it returns the loss on one
    minibatch with its graph and does NOT call ``backward()``; every call within a step must
    evaluate the same minibatch at the current parameters. :meth:`step` sets ``.grad`` to g and
    returns L₀ (detached).

    State, on the first parameter: ``step``, ``damping`` (the current λ), ``scale`` (V),
    ``acceleration_fallbacks`` (steps whose ε-algorithm fell back to the last partial sum) and,
    with momentum, ``previous_update`` (the flat u).

    Reference: the authors' JAX code (``OursAdaptive`` / ``OursDampedUnadaptive``, the ``damped``
    series, ``lower_bound`` scale; ``reference/clarke.md`` §4).

    Faithful to the reference: V starts at 100 and never decreases; K = 1 is g/√V; the
    Sablonnière modifier is off by default, as the reference's misspelt check leaves it
    (``sablonniere=True`` applies it).

    Differs from the reference: (1) the adaptive variant's 2×2 solve for (α, μ) is not done: its
    right-hand side is the first column of its matrix, so it always returns α = 1, μ = 0, which
    is ``lr=1, momentum=0`` here; (2) the series coefficients come from a recursion that does not
    divide by 1 − λ²/V (:func:`series_coefficients`), so λ may grow past √V; (3) when the
    ε-algorithm meets a difference that vanishes to rounding, Δ is the last partial sum instead of
    a non-finite number (counted in ``acceleration_fallbacks``). The ``quasi-damped`` series, the
    power-iteration scale and the Levin transform (all unused in the final configurations) are
    not implemented.

    Non-finite values: not checked; a non-finite loss or product makes the parameters or the
    next loss non-finite, which marks a trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.0,
        damping: float = 1.0,
        terms: int = 20,
        acceleration_order: int = 1,
        damping_factor: float = 0.9,
        min_damping: float = 1e-8,
        initial_scale: float = 100.0,
        sablonniere: bool = False,
    ) -> None:
        terms = check_positive_int("terms", terms)
        if (
            isinstance(acceleration_order, bool)
            or not isinstance(acceleration_order, int)
            or not 0 <= acceleration_order <= (terms - 1) // 2
        ):
            fail(
                "acceleration_order",
                repr(acceleration_order),
                f"an integer in [0, (terms - 1) // 2] = [0, {(terms - 1) // 2}] for terms = {terms}",
            )
        if not isinstance(damping_factor, (int, float)) or not 0 < damping_factor <= 1:
            fail("damping_factor", repr(damping_factor), "a number in (0, 1]")
        momentum = check_decay("momentum", momentum)
        if momentum and damping_factor < 1:
            fail(
                "momentum",
                repr(momentum),
                "0 when damping_factor < 1 (the reduction ratio models the step lr·Δ only); "
                "damping_factor = 1 fixes the damping",
            )
        defaults = dict(
            lr=check_nonnegative("lr", lr),
            momentum=momentum,
            damping=check_positive("damping", damping),
            terms=terms,
            acceleration_order=acceleration_order,
            damping_factor=float(damping_factor),
            min_damping=check_nonnegative("min_damping", min_damping),
            initial_scale=check_positive("initial_scale", initial_scale),
            sablonniere=bool(sablonniere),
        )
        super().__init__(param_list(params, type(self).__name__), defaults)
        flat_group(self, type(self).__name__)

    def step(self, closure: Callable[[], Any] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One step on the closure's minibatch; returns L₀ (the loss before the step)."""
        closure = require_closure(closure, type(self).__name__, CLOSURE_CONTRACT)
        group = self.param_groups[0]
        params = group["params"]
        state = self.state[params[0]]
        if "step" not in state:
            state.update(
                step=0, damping=group["damping"], scale=group["initial_scale"], acceleration_fallbacks=0
            )
        # The loss's graph lives only inside this call: the second evaluation runs without it.
        loss, grad, direction, fell_back = self._direction(closure, group, state)
        state["step"] += 1
        state["acceleration_fallbacks"] += int(fell_back)
        lr, momentum = group["lr"], group["momentum"]
        with torch.no_grad():
            update = direction * lr
            if momentum:
                previous = state.get("previous_update")
                if previous is not None:
                    update.add_(previous, alpha=momentum)
                state["previous_update"] = update
            offset = 0
            for p in params:
                p.sub_(update[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
            if group["damping_factor"] < 1:
                new_loss = float(closure())
                predicted = (0.5 * lr**2 - lr) * float(torch.dot(direction, grad))
                state["damping"] = update_damping(
                    state["damping"],
                    ratio(new_loss - float(loss), predicted),
                    decrease=group["damping_factor"],
                    increase=1 / group["damping_factor"],
                    minimum=group["min_damping"],
                )
        return loss

    def _direction(
        self, closure: Callable[[], Any], group: dict[str, Any], state: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """L₀, the flat g and Δ (with the fallback flag); sets ``.grad`` and updates V."""
        params = group["params"]
        loss, grads = loss_and_gradient(closure, params, type(self).__name__, create_graph=group["terms"] > 1)
        sizes = [p.numel() for p in params]

        def square_product(vector: torch.Tensor) -> torch.Tensor:
            pieces = [piece.view_as(p) for piece, p in zip(vector.split(sizes), params, strict=True)]
            for _ in range(2):
                pieces = hessian_vector_product(grads, params, pieces)
            return torch.cat([piece.reshape(-1) for piece in pieces])

        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.grad = g.detach()
            grad = torch.cat([g.detach().reshape(-1) for g in grads])
            direction, state["scale"], fell_back = series_sfn_direction(
                grad,
                square_product,
                scale=state["scale"],
                damping=state["damping"],
                terms=group["terms"],
                acceleration_order=group["acceleration_order"],
                sablonniere=group["sablonniere"],
            )
        return loss.detach(), grad, direction, fell_back


class SeriesSFNUnadaptive(SeriesSFN):
    r"""The paper's unadaptive series SFN ("Ours (Damped Unadaptive)", ``OursDampedUnadaptive``):
    :class:`SeriesSFN` with ``damping_factor=1`` and that variant's defaults.

    Each step: one loss evaluation, 2(K − 1) Hessian-vector products, and no second evaluation::

        Δ = series_sfn_direction(g, v ↦ H(Hv); V, λ, K, a)      ≈ (|H| + λI)⁻¹g, λ fixed
        u = lr·Δ + momentum·u_prev;  x ← x − u                    heavy-ball on the update

    Identical, step for step, to ``SeriesSFN(params, ..., damping_factor=1)``; only the defaults
    differ: α = 1.0, μ = 0.5, λ = 1e-4, K = 20, a = 1 (``reference/clarke.md`` §4.4; the
    authors tune all five). λ never changes, so :class:`SeriesSFN`'s ``min_damping`` (a floor
    for the adapted λ) is not taken.

    Args:
        params: as :class:`SeriesSFN`.
        lr: α, finite and >= 0 (default 1.0).
        momentum: μ in [0, 1) (default 0.5).
        damping: λ, the fixed damping, finite and > 0 (default 1e-4).
        terms: K, integer >= 1 (default 20).
        acceleration_order: a, integer in [0, ⌊(K − 1)/2⌋] (default 1).
        initial_scale: V₀, finite and > 0 (default 100).
        sablonniere: as :class:`SeriesSFN` (default False).

    Closure, state and differences from the reference: as :class:`SeriesSFN` (the closure is
    called once per step; ``state["damping"]`` stays λ).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.5,
        damping: float = 1e-4,
        terms: int = 20,
        acceleration_order: int = 1,
        initial_scale: float = 100.0,
        sablonniere: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            damping=damping,
            terms=terms,
            acceleration_order=acceleration_order,
            damping_factor=1.0,
            initial_scale=initial_scale,
            sablonniere=sablonniere,
        )
