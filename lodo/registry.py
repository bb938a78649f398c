"""Registry: optimizer name → class, the hyperparameters a tuner may set, and how it evaluates.

Each record names its class as ``"module:Class"`` and is imported only when built, so listing
the registry is cheap. Hyperparameter kinds drive the tuner's normalisation: ``rate`` (log),
``decay`` (log(1 − x) by role), ``other`` (log).

Evaluation modes tell a trial runner how many loss evaluations a step costs and which closure
to pass: ``gradient`` (loss + backward, then ``step()``), ``gradient-pair`` (as ``gradient``,
then ``step(closure)`` with a same-batch closure that calls backward: L-BFGS, O-LBFGS),
``loss`` (``step(closure)`` with a fresh-batch closure returning the loss with its graph; the
optimizer calls it once per step and differentiates it twice: Levenberg–Marquardt, Newton, series
SFN with fixed damping), ``same-batch-loss`` (``step(closure)`` with a closure returning the loss
with its graph, no backward, on one fresh minibatch per step that every call of the step
re-evaluates; each call is one evaluation, and a step starts only when two fit the budget:
series SFN with adaptive damping) and ``same-batch-outputs`` (as ``same-batch-loss``, plus
``batch=`` the minibatch as model, inputs, targets and loss form when the task provides one, else
None: AdamQLR).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim import Optimizer

Kind = Literal["rate", "decay", "other"]
Evaluation = Literal["gradient", "gradient-pair", "loss", "same-batch-loss", "same-batch-outputs"]


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    default: float
    kind: Kind
    description: str


def _identity(values: dict[str, float]) -> dict[str, Any]:
    return values


def _betas(values: dict[str, float]) -> dict[str, Any]:
    out = dict(values)
    out["betas"] = (out.pop("beta1"), out.pop("beta2"))
    return out


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    target: str
    summary: str
    hyperparameters: tuple[Hyperparameter, ...]
    evaluation: Evaluation = "gradient"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    to_kwargs: Callable[[dict[str, float]], dict[str, Any]] = _identity
    needs_total_steps: bool = False
    # the optimizer draws random numbers (LODO's permutations, θ's init): built with the trial seed
    seeded: bool = False
    # constructor choices that are not tuned, by name: allowed values (strings, so JSON can carry
    # them) → what the constructor takes
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters)

    @property
    def defaults(self) -> dict[str, float]:
        return {h.name: h.default for h in self.hyperparameters}

    @property
    def learning_rate(self) -> str | None:
        """The hyperparameter that scales every step (the first of kind ``rate``: lr, LODO's α),
        or None when the optimizer has none (Levenberg–Marquardt's λ, AdamQLR's damping)."""
        return next((h.name for h in self.hyperparameters if h.kind == "rate"), None)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor arguments of ``options`` (e.g. ``{"meta_dtype": "float32"}``); an unknown
        option or value is a ValueError naming the allowed ones."""
        out = {}
        for name, value in options.items():
            if name not in self.options:
                allowed = " | ".join(self.options) or "none"
                raise ValueError(f"Invalid option {name!r} for {self.name} (allowed: {allowed})")
            choices = self.options[name]
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"Invalid {name}: {value!r} (allowed: {' | '.join(choices)})")
            out[name] = choices[value]
        return out

    def resolve(self) -> type[Optimizer]:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)

    def check_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Defaults completed by ``values``; an unknown name is a ValueError naming the allowed ones."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            allowed = " | ".join(self.names) or "none"
            raise ValueError(f"Invalid hyperparameter {unknown[0]!r} for {self.name} (allowed: {allowed})")
        return {**self.defaults, **{k: float(v) for k, v in values.items()}}

    def build(self, params, values: Mapping[str, float] | None = None, **options: Any) -> Optimizer:
        """The optimizer with defaults overridden by ``values``; ``options`` are constructor
        arguments that are not tuned (``seed``, ``total_steps``, ``meta_dtype``, ...)."""
        kwargs = self.to_kwargs(self.check_values(values or {}))
        return self.resolve()(params, **self.fixed, **kwargs, **options)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.target.replace(":", "."),
            "summary": self.summary,
            "evaluation": self.evaluation,
            "needs_total_steps": self.needs_total_steps,
            "seeded": self.seeded,
            "learning_rate": self.learning_rate,
            "options": {name: list(choices) for name, choices in self.options.items()},
            "hyperparameters": [
                {"name": h.name, "default": h.default, "kind": h.kind, "description": h.description}
                for h in self.hyperparameters
            ],
        }


def _series_integers(values: dict[str, float]) -> dict[str, Any]:
    """K and a from a tuner's floats: K = round(K) >= 1, a = round(a) clipped to [0, ⌊(K − 1)/2⌋]
    (the authors' sampler draws a within that range for each K)."""
    out = dict(values)
    out["terms"] = max(1, round(out["terms"]))
    out["acceleration_order"] = min(max(0, round(out["acceleration_order"])), (out["terms"] - 1) // 2)
    return out


# LODO's θ, momentum and meta-state: float64 as the authors' code, float32 to halve its memory
# (ResNet-18 in float64 needs ~52 GB of meta-state)
_META_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _lodo(name, cls, summary, with_beta=True):
    hps = [
        Hyperparameter("lr", 1.0, "rate", "α, the initial learning rate (G(θ₀) = −αI)"),
        Hyperparameter("meta_lr", 1e-3, "rate", "learning rate of the meta-optimizer"),
    ]
    if with_beta:
        hps.append(Hyperparameter("beta", 0.9, "decay", "β, momentum EMA decay"))
    return OptimizerSpec(
        name, f"lodo.lodo:{cls}", summary, tuple(hps), seeded=True, options={"meta_dtype": _META_DTYPES}
    )


_LR = "learning rate"
_BASELINES = "lodo.baselines"

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in [
        _lodo("lodo", "LODO", "LODO: learned block-permutation preconditioner, Adam meta-optimizer"),
        _lodo("lodo-diagonal", "LODODiagonal", "LODO ablation: diagonal preconditioner"),
        _lodo("lodo-global", "LODOGlobal", "LODO ablation: one learned scalar step size"),
        _lodo("lodo-residuals", "LODOResiduals", "LODO ablation: residual network preconditioner"),
        _lodo("lodo-no-momentum", "LODONoMomentum", "LODO ablation: β = 0", with_beta=False),
        _lodo("lodo-sgd", "LODOSGD", "LODO ablation: SGD meta-optimizer"),
        OptimizerSpec(
            "adam",
            f"{_BASELINES}.keras_adam:KerasAdam",
            "Adam with the Keras ε convention (ε = 1e-7 outside the bias-corrected √v)",
            (
                Hyperparameter("lr", 1e-3, "rate", _LR),
                Hyperparameter("beta1", 0.9, "decay", "first-moment decay"),
                Hyperparameter("beta2", 0.999, "decay", "second-moment decay"),
            ),
            to_kwargs=_betas,
        ),
        OptimizerSpec(
            "momentum",
            "torch.optim:SGD",
            "heavy-ball SGD (Keras SGD; torch SGD with dampening 0 is the same for a fixed lr)",
            (
                Hyperparameter("lr", 0.01, "rate", _LR),
                Hyperparameter("momentum", 0.0, "decay", "heavy-ball momentum"),
            ),
            fixed={"dampening": 0.0, "nesterov": False},
        ),
        OptimizerSpec(
            "sgd",
            "torch.optim:SGD",
            "SGD with heavy-ball momentum and coupled weight decay: the AdamQLR paper's 'SGD (Full)' "
            "and the one-pass strategy's inner optimizer, so its tuned values can be evaluated",
            (
                Hyperparameter("lr", 0.01, "rate", _LR),
                Hyperparameter("momentum", 0.9, "decay", "heavy-ball momentum"),
                Hyperparameter("weight_decay", 1e-4, "other", "ξ, coupled weight decay (ξw added to g)"),
            ),
            fixed={"dampening": 0.0, "nesterov": False},
        ),
        OptimizerSpec(
            "rmsprop",
            f"{_BASELINES}.keras_rmsprop:KerasRMSprop",
            "RMSprop with Keras semantics (ε inside the square root when momentum > 0)",
            (
                Hyperparameter("lr", 1e-3, "rate", _LR),
                Hyperparameter("rho", 0.9, "decay", "ρ, second-moment decay (log-scaled in code mode)"),
                Hyperparameter("momentum", 0.0, "decay", "momentum"),
            ),
        ),
        OptimizerSpec(
            "yogi",
            f"{_BASELINES}.yogi:PaperYogi",
            "Yogi as the LODO paper ran it: ε = 1e-3, no bias correction",
            (
                Hyperparameter("lr", 1e-3, "rate", _LR),
                Hyperparameter("beta1", 0.9, "decay", "first-moment decay"),
                Hyperparameter("beta2", 0.999, "decay", "second-moment decay"),
            ),
            to_kwargs=_betas,
        ),
        OptimizerSpec(
            "lars",
            f"{_BASELINES}.lars:PaperLARS",
            "LARS with the (1 − progress)² decay and no trust coefficient",
            (
                Hyperparameter("lr", 1e-3, "rate", _LR),
                Hyperparameter("momentum", 0.9, "decay", "momentum"),
                Hyperparameter("weight_decay", 5e-4, "other", "coupled weight decay"),
            ),
            needs_total_steps=True,
        ),
        OptimizerSpec(
            "lbfgs",
            f"{_BASELINES}.lbfgs:SchraudolphLBFGS",
            "stochastic L-BFGS without line search (Schraudolph et al. 2007), memory 48",
            (
                Hyperparameter("lr", 1e-3, "rate", "η₀, the gain at t = 0"),
                Hyperparameter("tau", 1e4, "other", "τ of the gain η₀·τ/(τ + t)"),
                Hyperparameter("eps", 1e-10, "other", "ε, the step scale of the first iteration"),
            ),
            evaluation="gradient-pair",
        ),
        OptimizerSpec(
            "olbfgs",
            f"{_BASELINES}.lbfgs:OnlineLBFGS",
            "online L-BFGS (Schraudolph et al. 2007), scaling averaged over the memory",
            (
                Hyperparameter("lr", 1e-3, "rate", "η₀, the gain at t = 0"),
                Hyperparameter("tau", 1e4, "other", "τ of the gain η₀·τ/(τ + t)"),
                Hyperparameter("eps", 1e-10, "other", "ε, the step scale of the first iteration"),
            ),
            evaluation="gradient-pair",
        ),
        OptimizerSpec(
            "bfgs",
            f"{_BASELINES}.bfgs:BFGS",
            "full inverse-Hessian BFGS with a fixed step scale",
            (
                Hyperparameter("lr", 0.01, "rate", "step scale"),
                Hyperparameter("h0_scale", 1.0, "other", "initial inverse Hessian H₀ = h0_scale·I"),
            ),
        ),
        OptimizerSpec(
            "levenberg-marquardt",
            f"{_BASELINES}.levenberg_marquardt:LevenbergMarquardt",
            "Levenberg–Marquardt on ∇f = 0 with the exact Hessian: x ← x − (H² + λ diag H²)⁻¹ H g",
            (Hyperparameter("lam", 1.0, "other", "λ, the damping"),),
            evaluation="loss",
        ),
        OptimizerSpec(
            "newton",
            f"{_BASELINES}.newton:Newton",
            "Newton's method with the exact dense Hessian (small problems only)",
            (),
            evaluation="loss",
        ),
        OptimizerSpec(
            "adamqlr",
            "lodo.adamqlr:AdamQLR",
            "AdamQLR: Adam's direction, learning rate from a damped Fisher quadratic model, "
            "Levenberg–Marquardt damping (Hessian curvature on tasks without model outputs)",
            (
                Hyperparameter("damping", 1e-3, "other", "λ₀, the initial damping"),
                Hyperparameter("damping_decrease", 0.5, "decay", "ω_dec, λ's factor when ρ > 3/4"),
                Hyperparameter("damping_increase", 2.0, "other", "ω_inc, λ's factor when ρ < 1/4 (>= 1)"),
            ),
            evaluation="same-batch-outputs",
            fixed={"curvature": "auto"},
        ),
        OptimizerSpec(
            "sfn-series",
            "lodo.sfn_series:SeriesSFN",
            "series saddle-free Newton: (|H| + λI)⁻¹g from K terms of H²-products, Wynn ε "
            "acceleration, adaptive damping",
            (
                Hyperparameter("damping", 1.0, "other", "λ₀, the initial damping"),
                Hyperparameter("terms", 20, "other", "K, series terms (rounded; 2(K − 1) Hessian products)"),
                Hyperparameter(
                    "acceleration_order", 1, "other", "a, Shanks transforms (rounded, at most ⌊(K − 1)/2⌋)"
                ),
            ),
            evaluation="same-batch-loss",
            to_kwargs=_series_integers,
        ),
        OptimizerSpec(
            "sfn-series-unadaptive",
            "lodo.sfn_series:SeriesSFNUnadaptive",
            "series saddle-free Newton with fixed damping (the paper's 'Ours (Damped Unadaptive)'): "
            "α·(|H| + λI)⁻¹g from K terms of H²-products, Wynn ε acceleration, heavy-ball momentum "
            "on the update; one loss evaluation per step",
            (
                Hyperparameter("lr", 1.0, "rate", "α, the step scale"),
                Hyperparameter("momentum", 0.5, "decay", "μ, heavy-ball momentum on the update"),
                Hyperparameter("damping", 1e-4, "other", "λ, the fixed damping"),
                Hyperparameter("terms", 20, "other", "K, series terms (rounded; 2(K − 1) Hessian products)"),
                Hyperparameter(
                    "acceleration_order", 1, "other", "a, Shanks transforms (rounded, at most ⌊(K − 1)/2⌋)"
                ),
            ),
            # fixed damping: the step calls its closure once, so the fresh-batch closure of `loss`
            # (one evaluation a step; `same-batch-loss` would reserve room for a second)
            evaluation="loss",
            to_kwargs=_series_integers,
        ),
    ]
}


def get(name: str) -> OptimizerSpec:
    """The record for ``name``; an unknown name is a ValueError listing the registered ones."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"Unknown optimizer {name!r} (allowed: {' | '.join(OPTIMIZERS)})") from None


def build(name: str, params, values: Mapping[str, float] | None = None, **options: Any) -> Optimizer:
    """Shorthand for ``get(name).build(params, values, **options)``."""
    return get(name).build(params, values, **options)


def describe() -> list[dict[str, Any]]:
    """Every optimizer with its hyperparameters, as plain data (``lodotune optimizers --json``);
    ``vectorized``: it has a population form (tuner.population runs a shard as one program)."""
    from . import population  # imports this module

    return [{**spec.describe(), "vectorized": population.supports(spec.name)} for spec in OPTIMIZERS.values()]
