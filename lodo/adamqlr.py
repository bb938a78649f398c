"""AdamQLR: Adam's direction, a learning rate from a damped quadratic model (Clarke & Hernández-Lobato,
ICML 2024; ``reference/clarke.md`` §1, §7.2).

Also home of the two pieces the series saddle-free Newton optimizer shares with it: the
Levenberg–Marquardt damping rule and Hessian-vector products through a closure's graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, jvp

from lodo._flat import param_list
from lodo._validation import check_choice, check_nonnegative, check_positive, fail
from lodo.baselines._common import check_betas, flat_group, require_closure

__all__ = [
    "CURVATURES",
    "LOSS_FORMS",
    "AdamQLR",
    "OutputBatch",
    "adam_direction_",
    "gauss_newton_quadratic",
    "hessian_vector_product",
    "loss_and_gradient",
    "output_hessian_quadratic",
    "ratio",
    "update_damping",
]

CURVATURES = ("fisher", "hessian", "auto")
LOSS_FORMS = ("cross-entropy", "half-mse")
# The Levenberg–Marquardt thresholds on the reduction ratio ρ (kfac-jax's, kept by both papers).
_SHRINK_ABOVE, _GROW_BELOW = 0.75, 0.25
CLOSURE_CONTRACT = (
    "returns the loss on one fixed minibatch with its graph, without calling backward(), "
    "and evaluates the same minibatch every time it is called"
)


class OutputBatch(Protocol):
    """What the Fisher curvature reads from ``step(batch=...)`` (``tasks.base.OutputBatch`` has it).

    ``loss`` names the training loss as a function of ``model(inputs)`` and ``targets``:
    ``"cross-entropy"`` (softmax cross-entropy over dim 1, mean over the rest) or ``"half-mse"``
    (mean over every element of ½(output − target)²).
    """

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss: str


def update_damping(
    damping: float, ratio: float, *, decrease: float, increase: float, minimum: float
) -> float:
    """The Levenberg–Marquardt rule: λ·decrease if ρ > 3/4, λ·increase if ρ < 1/4, then λ ≥ minimum.

    A NaN ratio (a zero predicted change) fails both comparisons and leaves λ as it was.
    """
    if ratio > _SHRINK_ABOVE:
        damping *= decrease
    elif ratio < _GROW_BELOW:
        damping *= increase
    return max(damping, minimum)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN for a zero denominator (ρ when the model predicts no change)."""
    return numerator / denominator if denominator != 0 else math.nan


def loss_and_gradient(
    closure: Callable[[], Any], params: Sequence[torch.Tensor], name: str, *, create_graph: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Calls ``closure`` once; the loss and ∂loss/∂p for every parameter (zeros where unused).

    With ``create_graph`` the gradients keep their graph, so that :func:`hessian_vector_product`
    can differentiate them again; the first call's graph then serves every product of the step.
    """
    with torch.enable_grad():
        loss = closure()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            fail("closure", "its return value", f"{name}.step needs a closure that {CLOSURE_CONTRACT}")
        grads = torch.autograd.grad(
            loss, params, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    return loss, list(grads)


def hessian_vector_product(
    grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """H·v by double backward through the graph of ``grads`` (from :func:`loss_and_gradient` with
    ``create_graph=True``); the graph is kept for further products.

    Double backward rather than forward-over-reverse (``jvp(grad(f))``): it reuses the one forward
    and backward pass of the step for every product, where each forward-over-reverse product
    would run the model again, and it works for any closure, not only for a ``functional_call``.
    """
    # A gradient without a graph is constant: its row of H, and by symmetry its column, is zero.
    pairs = [(g, p, v) for g, p, v in zip(grads, params, vectors, strict=True) if g.requires_grad]
    if not pairs:  # the loss is linear in every parameter
        return [torch.zeros_like(v) for v in vectors]
    products = iter(
        torch.autograd.grad(
            [g for g, _, _ in pairs],
            [p for _, p, _ in pairs],
            grad_outputs=[v for _, _, v in pairs],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
    )
    return [
        next(products) if g.requires_grad else torch.zeros_like(v)
        for g, v in zip(grads, vectors, strict=True)
    ]


def output_hessian_quadratic(outputs: torch.Tensor, tangent: torch.Tensor, loss: str) -> torch.Tensor:
    """uᵀ·(∂²L/∂z²)·u: the curvature of the minibatch loss L(z) along an output tangent u = J·d.

    Closed forms, with z = ``outputs`` and the loss as the task reduces it:

    * ``"cross-entropy"``: per example, p = softmax(zₙ) and q = Σₖ pₖuₖ² − (Σₖ pₖuₖ)² (the
      multinomial Fisher, which is this loss's Hessian); L is the mean over examples, so is ∂²L.
    * ``"half-mse"``: L = mean over all elements of ½(z − t)², so ∂²L = I / (number of elements).
      This matches the reference for one output per example (every regression task it ran); with
      K > 1 outputs the reference's curvature is K times the loss's (clarke.md §1.3).
    """
    if loss == "cross-entropy":
        probabilities = torch.softmax(outputs, dim=1)
        mean_tangent = (probabilities * tangent).sum(dim=1)
        return ((probabilities * tangent.square()).sum(dim=1) - mean_tangent.square()).mean()
    if loss == "half-mse":
        return tangent.square().mean()
    fail("batch.loss", repr(loss), " | ".join(LOSS_FORMS))


def gauss_newton_quadratic(
    batch: OutputBatch, params: Sequence[torch.Tensor], directions: Sequence[torch.Tensor]
) -> torch.Tensor:
    """dᵀ·G·d with G = Jᵀ·(∂²L/∂z²)·J, the Gauss–Newton matrix (= the exact Fisher for these
    losses), from ONE forward-mode product: ``torch.func.jvp`` of ``functional_call(model)``
    gives z and J·d together; :func:`output_hessian_quadratic` does the rest.

    ``params`` must be parameters of ``batch.model``; the model's other parameters stay fixed.
    A forward that updates buffers in place (BatchNorm in training mode) is refused by
    ``torch.func``: use the Hessian curvature for such models.
    """
    names = {id(p): name for name, p in batch.model.named_parameters()}
    if any(id(p) not in names for p in params):
        fail("batch.model", type(batch.model).__name__, "the module that owns every optimized parameter")
    primals = {names[id(p)]: p.detach() for p in params}
    tangents = {names[id(p)]: d for p, d in zip(params, directions, strict=True)}

    def outputs(values: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(batch.model, values, (batch.inputs,))

    with torch.no_grad():
        z, tangent = jvp(outputs, (primals,), (tangents,))
    return output_hessian_quadratic(z, tangent, batch.loss)


def adam_direction_(
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    *,
    step: int,
    beta1: float,
    beta2: float,
    eps: float,
) -> list[torch.Tensor]:
    """Updates Adam's moments in place and returns d = m̂/(√v̂ + ε) per tensor (step t ≥ 1).

    No learning rate: d points uphill like g (optax ``scale_by_adam``, ε outside the root).
    """
    directions = []
    for grad, exp_avg, exp_avg_sq in zip(grads, exp_avgs, exp_avg_sqs, strict=True):
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(eps)
        directions.append(exp_avg.div(1 - beta1**step).div_(denominator))
    return directions


def _dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ xᵢ·yᵢ over all tensors: every inner product of these methods is global."""
    return torch.stack([torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in zip(xs, ys, strict=True)]).sum()


class AdamQLR(torch.optim.Optimizer):
    r"""AdamQLR: Adam's direction with the learning rate that minimises a damped quadratic model.

    Algorithm, each step (two loss evaluations on one minibatch, one curvature product)::

        L₀ = closure();  g = ∇L₀
        m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  d = m̂ / (√v̂ + ε)     (Adam, bias-corrected)
        Q = dᵀCd + λ‖d‖²                 C: Fisher (= Gauss–Newton) or Hessian, on the same batch
        α = −gᵀd / Q                     the minimiser of L₀ + α gᵀd + ½α²Q; its sign is kept
        x ← x + α d
        L₁ = closure()                   same minibatch, new parameters, no gradient
        ρ = (L₁ − L₀) / (½α²Q + α gᵀd)
        λ ← λ·ω_dec if ρ > 3/4;  λ·ω_inc if ρ < 1/4;  then λ ≥ min_damping

    The step is always accepted; the moments are updated whatever ρ is. Every inner product runs
    over all parameters at once. ``damping_decrease = damping_increase = 1`` keeps λ fixed and
    skips the evaluation of L₁. The defaults are the paper's "AdamQLR (Untuned)".

    Curvature:

    * ``"fisher"`` (the paper's): dᵀCd = (Jd)ᵀ·∂²L/∂z²·(Jd) from one ``torch.func.jvp`` of the
      model's outputs z along d (:func:`gauss_newton_quadratic`). :meth:`step` then needs
      ``batch``: the model, the minibatch's inputs and targets and the loss form
      (:class:`OutputBatch`). Without it, a ValueError naming ``batch``.
    * ``"hessian"``: dᵀHd by double backward through the closure's graph
      (:func:`hessian_vector_product`); needs only the closure.
    * ``"auto"``: Fisher when :meth:`step` is given a batch, Hessian otherwise. The registry uses
      it so that tasks without model outputs (Rosenbrock, the quadratic bowl) run the Hessian
      variant, as the paper did on Rosenbrock; the curvature used last is ``state["curvature"]``.

    Args:
        params: tensors or one parameter-group dict (one group, one device, one floating dtype:
            λ and α are global).
        damping: λ₀, the initial damping, finite and > 0 (default 1e-3).
        damping_decrease: ω_dec in (0, 1] (default 0.5).
        damping_increase: ω_inc, finite and >= 1 (default 2.0).
        min_damping: the floor of λ, finite and >= 0 (default 1e-8).
        betas: Adam's (β₁, β₂), each in [0, 1) (default (0.9, 0.999); never tuned in the paper).
        eps: Adam's ε, finite and >= 0, added to √v̂ (default 1e-8).
        curvature: ``"fisher"`` (default) | ``"hessian"`` | ``"auto"``.

    Closure (required; missing → ValueError naming ``closure``): it returns the loss on one
    minibatch with its graph and does NOT call ``backward()``; every call within a step must
    evaluate the same minibatch at the current parameters. :meth:`step` sets ``.grad`` to g and
    returns L₀ (detached).

    State: per parameter ``exp_avg``, ``exp_avg_sq``; on the first parameter also ``step``,
    ``damping`` (the current λ), ``learning_rate`` (−α, the positive number the paper logs) and
    ``curvature``.

    Reference: the authors' JAX code (``AdamQLR_NoHPO_NoLRClipping`` and siblings;
    ``reference/clarke.md`` §1.2–1.4).

    Differs from the reference: ``"half-mse"`` uses the loss's own output Hessian, so with K > 1
    outputs per example the curvature is 1/K of the reference's (equal for the one-output
    regressions it ran; see :func:`output_hessian_quadratic`); a zero direction d takes no step
    instead of α = 0/0. The optional knobs the final configurations leave off (α clipping,
    update amplification, EMAs of α and Q, envelopes, the older ``decreasing_loss`` rule) and the
    undamped variant (λ = 0) are not implemented.

    Non-finite values: not checked; a non-finite loss, direction or Q makes the parameters or
    the next loss non-finite, which marks a trial diverged.
    """

    def __init__(
        self,
        params: Iterable[Any],
        damping: float = 1e-3,
        damping_decrease: float = 0.5,
        damping_increase: float = 2.0,
        min_damping: float = 1e-8,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        curvature: str = "fisher",
    ) -> None:
        damping = check_positive("damping", damping)
        if not isinstance(damping_decrease, (int, float)) or not 0 < damping_decrease <= 1:
            fail("damping_decrease", repr(damping_decrease), "a number in (0, 1]")
        if not isinstance(damping_increase, (int, float)) or not 1 <= damping_increase < math.inf:
            fail("damping_increase", repr(damping_increase), "a finite number >= 1")
        defaults = dict(
            damping=damping,
            damping_decrease=float(damping_decrease),
            damping_increase=float(damping_increase),
            min_damping=check_nonnegative("min_damping", min_damping),
            betas=check_betas(betas),
            eps=check_nonnegative("eps", eps),
            curvature=check_choice("curvature", curvature, CURVATURES),
        )
        super().__init__(param_list(params, "AdamQLR"), defaults)
        flat_group(self, "AdamQLR")

    def step(  # type: ignore[override]
        self, closure: Callable[[], Any] | None = None, batch: OutputBatch | None = None
    ) -> torch.Tensor:
        """One AdamQLR step on the closure's minibatch; returns L₀ (the loss before the step)."""
        closure = require_closure(closure, "AdamQLR", CLOSURE_CONTRACT)
        group = self.param_groups[0]
        params = group["params"]
        curvature = group["curvature"]
        if curvature == "auto":
            curvature = "hessian" if batch is None else "fisher"
        if curvature == "fisher" and batch is None:
            fail(
                "batch",
                "None",
                "an OutputBatch (model, inputs, targets, loss) for curvature='fisher'; "
                "curvature='hessian' or 'auto' needs only the closure",
            )
        loss, grads = loss_and_gradient(closure, params, "AdamQLR", create_graph=curvature == "hessian")
        state = self.state[params[0]]
        if "step" not in state:
            state.update(step=0, damping=group["damping"])
        for p in params:
            if "exp_avg" not in self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        damping = state["damping"]
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.grad = g.detach()
            directions = adam_direction_(
                [g.detach() for g in grads],
                [self.state[p]["exp_avg"] for p in params],
                [self.state[p]["exp_avg_sq"] for p in params],
                step=state["step"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
            )
            grad_dot_direction = float(_dot(grads, directions))
            direction_norm_sq = float(_dot(directions, directions))
        if curvature == "fisher":
            along = float(gauss_newton_quadratic(batch, params, directions))
        else:
            along = float(_dot(hessian_vector_product(grads, params, directions), directions))
        loss = loss.detach()
        del grads  # frees the graph of a Hessian step before the second evaluation
        quadratic = along + damping * direction_norm_sq
        # No direction, no step (instead of 0/0); Q = 0 along a direction (a Hessian can do it)
        # leaves the quadratic model without a minimiser: NaN, and the run diverges.
        alpha = -ratio(grad_dot_direction, quadratic) if direction_norm_sq > 0 else 0.0
        with torch.no_grad():
            for p, d in zip(params, directions, strict=True):
                p.add_(d, alpha=alpha)
        if (group["damping_decrease"], group["damping_increase"]) != (1.0, 1.0):
            with torch.no_grad():
                new_loss = float(closure())
            predicted = 0.5 * alpha**2 * quadratic + alpha * grad_dot_direction
            state["damping"] = update_damping(
                damping,
                ratio(new_loss - float(loss), predicted),
                decrease=group["damping_decrease"],
                increase=group["damping_increase"],
                minimum=group["min_damping"],
            )
        state["learning_rate"] = -alpha
        state["curvature"] = curvature
        return loss
