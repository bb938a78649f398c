"""The ``onepass`` strategy: tune SGD's learning rate, weight decay and momentum during one training
run by implicit differentiation (Clarke, Oldewage, Hernández-Lobato, ICLR 2022; clarke.md §5).

The inner optimizer is SGD with heavy-ball momentum and coupled L2 (PyTorch's SGD, dampening 0):
b_t = μ·b_{t−1} + ∇L_T(w_{t−1}) + ξ·w_{t−1}, u = η·b_t, w_t = w_{t−1} − u. The hyperparameters are
stored raw: η = 10^x (x clamped to [−10, 0]; one x per weight element with ``per_parameter_lr``),
ξ = 10^y, μ = sigmoid(z). Every ``update_interval`` (T = 10) steps, the last of them is taken with
a graph and the hypergradient of the validation loss is estimated with a Neumann series of
``lookback`` (i = 5) terms (§5.1, §5.2):

    p = Σ_{j<i} (I − ∂u/∂w)ᵀʲ ∂L_V/∂w_T,     dL_V/dλ ≈ −pᵀ ∂u/∂λ

(momentum buffer held constant, the direct term ∂L_V/∂λ taken as zero), then an Adam step
(lr 0.05) on the raw values. The weights are never reset.

The objective (``validation``): "minibatch" (the default, as the authors) is the loss on a
validation minibatch of the training batch size, drawn at every hyperparameter update without
replacement from a generator seeded by the episode's seed (its own stream: the task's
initialisation and training batches are unchanged); on a full-batch task (the UCI tasks, batch ≥
the validation set) that minibatch is the whole validation set. "full" is the loss on the whole
validation set at every update. The trajectory's ``validation_loss`` is the objective's value.

The evaluation (:func:`evaluate_onepass`) is the paper's protocol (§5.3, §5.4, §5.7): K =
``initialisations`` random initialisations (100 by default). Initialisation r starts from
(η, ξ, μ) drawn as §5.3 (log10 η ~ U[−6, −1], log10 ξ ~ U[−7, −2], μ ~ U[0, 1]) from a seed
derived from (job seed, r) — values given in ``initial`` are held fixed across all of them, only
the others are drawn — and trains the task seeded with ``ga.evaluation_seed(job seed, r)``. Each
initialisation is trained twice: by one-pass, and by the **Random** baseline (§5.4): the same
starting values, seed and length with the hyperparameters held fixed (no hyperparameter updates;
plain SGD, the same inner update code). Per method and final metric the results give the mean ±
std of the bootstrap means, the mean ± std of the bootstrap medians (``resamples`` = 1000 resamples
of the runs, the same resamples for both, seeded by the job seed) and the best single run. Diverged
runs (a non-finite loss, or non-finite final weights) are counted and left out of the statistics.
Every finished episode is a line of ``episodes.jsonl``; a resumed evaluation runs only the others.

Lengths (:func:`resolve_steps`): ``steps`` when given; else the paper's (§5.5: 4000 on the UCI
tasks, 10000 on Fashion-MNIST), scaled by ``step_scale``; else the task's final length.

Differences from the paper and the authors' code, chosen here: the paper's Random trains on train
+ validation (validation_proportion 0); ours trains on the train split only, so both methods see
the same training data. The validation minibatch is drawn afresh at every update (the authors use
the batch their validation loader yields at step T). The logit of μ is also clamped, to
[−LOGIT_LIMIT, LOGIT_LIMIT], so μ cannot reach 1 (clarke.md §7.4); a final window shorter than T
(when ``steps`` is not a multiple of it) still ends with a hyperparameter update.

Needs a task with ``validation_loss()`` (the supervised MLP tasks; "minibatch" also needs
``validation_minibatch_loss()``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

import tasks as task_registry
from tasks._rng import torch_generator
from tasks.registry import spec as task_spec

from .. import events as ev
from .. import final, ga
from .._validation import check_int_at_least, invalid
from ..rundir import versions, write_json
from ..summary import bootstrap_median
from .base import StrategyOptions, Summary

if TYPE_CHECKING:
    from ..runtime import JobContext
    from ..specs import TuneJob

HYPERPARAMETERS: tuple[str, ...] = ("lr", "weight_decay", "momentum")
TRANSFORMS = {"lr": "log10", "weight_decay": "log10", "momentum": "logit"}
LOG_LR_RANGE = (-10.0, 0.0)  # the authors' clamp on log10 η
LOGIT_LIMIT = 10.0  # μ ≤ sigmoid(10) ≈ 0.99995
# §5.3's random initialisation: log10 η ~ U[−6, −1], log10 ξ ~ U[−7, −2], μ ~ U[0, 1]
INITIAL_RANGES = {"lr": (-6.0, -1.0), "weight_decay": (-7.0, -2.0), "momentum": (0.0, 1.0)}
_INIT_STREAM = 0x1B
_VALIDATION_STREAM = "onepass-validation"  # the validation minibatches' stream of an episode's seed
VALIDATIONS = ("minibatch", "full")
METHODS = ("onepass", "random")  # the evaluation's two methods, run from the same initialisations
METHOD_DESCRIPTIONS = {
    "onepass": "one-pass implicit HPO of the tuned hyperparameters from the random initialisation",
    "random": "Random (clarke.md §5.4): SGD with the initialisation's values held fixed, no HPO "
    "(trained on the train split only; the paper's Random trains on train + validation)",
}
# §5.5: 4000 weight steps on every UCI task (400 hyperparameter steps), 10000 on Fashion-MNIST
PAPER_STEPS = {name: 4000 for name in task_registry.TASK_NAMES if name.startswith("uci-")} | {
    "fashion-mnist-mlp": 10000
}
PAPER_STEPS_SOURCE = "paper (clarke.md §5.5)"
FINAL_LENGTH_SOURCE = "task's final length"
GIVEN_SOURCE = "given"


def resolve_steps(task: str, steps: int | None, step_scale: float = 1.0) -> tuple[int, str]:
    """An episode's length and where it came from: ``steps`` as given (not scaled); else the
    paper's for the task (§5.5: UCI 4000, fashion-mnist-mlp 10000), scaled by ``step_scale`` as
    the final lengths are (``max(2, round(M · step_scale))``); else the task's final length
    (``final.final_length``, scaled)."""
    if steps is not None:
        return steps, GIVEN_SOURCE
    if task in PAPER_STEPS:
        scaled = max(2, round(PAPER_STEPS[task] * step_scale))
        source = PAPER_STEPS_SOURCE if step_scale == 1 else f"{PAPER_STEPS_SOURCE} × step_scale {step_scale}"
        return scaled, source
    source = FINAL_LENGTH_SOURCE if step_scale == 1 else f"{FINAL_LENGTH_SOURCE} × step_scale {step_scale}"
    return final.final_length(task, step_scale), source


@dataclass(frozen=True)
class OnePassConfig:
    """One one-pass tuning run: task, length, the method's settings, the starting values.

    ``initial`` gives the starting lr, weight_decay and momentum; any left out are drawn as §5.3
    does, from the job seed (the tuning episode) or from (job seed, r) (initialisation r of the
    evaluation); given values stay fixed across all initialisations. ``tuned`` names the
    hyperparameters the hypergradient moves; the others stay at their starting values (the
    paper's variants: all three, lr + weight_decay, weight_decay only = Lorraine et al.).
    ``validation``: the objective, "minibatch" or "full" (module docstring). ``initialisations``:
    K, the evaluation's random initialisations (each run by one-pass and by Random).
    ``steps_source`` says where ``steps`` came from (:func:`resolve_steps`).
    """

    task: str
    steps: int = 1000
    update_interval: int = 10
    lookback: int = 5
    meta_lr: float = 0.05
    per_parameter_lr: bool = False
    tuned: tuple[str, ...] = HYPERPARAMETERS
    initial: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    initialisations: int = 100
    validation: str = "minibatch"
    steps_source: str = GIVEN_SOURCE

    def __post_init__(self):
        if self.task not in task_registry.TASK_NAMES:
            raise invalid("task", self.task, " | ".join(task_registry.TASK_NAMES))
        check_int_at_least("steps", self.steps, 1)
        check_int_at_least("initialisations", self.initialisations, 1)
        if self.validation not in VALIDATIONS:
            raise invalid("validation", self.validation, " | ".join(VALIDATIONS))
        if not isinstance(self.steps_source, str):
            raise invalid("steps_source", self.steps_source, "a string")
        check_int_at_least("update_interval", self.update_interval, 1)
        check_int_at_least("lookback", self.lookback, 1)
        check_int_at_least("seed", self.seed, 0)
        if (
            isinstance(self.meta_lr, bool)
            or not isinstance(self.meta_lr, (int, float))
            or not self.meta_lr > 0
        ):
            raise invalid("meta_lr", self.meta_lr, "a number > 0")
        allowed_tuned = f"one or more of {' | '.join(HYPERPARAMETERS)}, each once"
        if not isinstance(self.tuned, (list, tuple)):
            raise invalid("tuned", self.tuned, f"a list of {allowed_tuned}")
        object.__setattr__(self, "tuned", tuple(self.tuned))
        if (
            not self.tuned
            or any(n not in HYPERPARAMETERS for n in self.tuned)
            or len(set(self.tuned)) < len(self.tuned)
        ):
            raise invalid("tuned", list(self.tuned), allowed_tuned)
        if not isinstance(self.initial, Mapping):
            raise invalid("initial", self.initial, f"an object with any of {' | '.join(HYPERPARAMETERS)}")
        for name, value in self.initial.items():
            if name not in HYPERPARAMETERS:
                raise invalid("initial hyperparameter", name, " | ".join(HYPERPARAMETERS))
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if name == "lr" and not (ok and 10 ** LOG_LR_RANGE[0] <= value <= 1):
                raise invalid("initial lr", value, "a number in [1e-10, 1]")
            if name == "weight_decay" and not (ok and value > 0):
                raise invalid("initial weight_decay", value, "a number > 0")
            if name == "momentum" and not (ok and 0 < value < 1):
                raise invalid("initial momentum", value, "a number in (0, 1)")
        task_spec(self.task).resolve_options(self.task_options)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": "onepass",
            "task": self.task,
            "steps": self.steps,
            "update_interval": self.update_interval,
            "lookback": self.lookback,
            "meta_lr": self.meta_lr,
            "per_parameter_lr": self.per_parameter_lr,
            "tuned": list(self.tuned),
            "initial": dict(self.initial),
            "seed": self.seed,
            "task_options": dict(self.task_options),
            "device": self.device,
            "initialisations": self.initialisations,
            "validation": self.validation,
            "steps_source": self.steps_source,
        }

    def starting_values(self, initialisation: int | None = None) -> dict[str, float]:
        """``initial``, completed by §5.3's random draws: seeded by the job seed (None: the
        tuning episode) or by (job seed, ``initialisation``) (the evaluation's initialisation r).
        The given values are the same for every initialisation; only the missing are drawn.
        Initialisation 0 draws the tuning episode's values (numpy's SeedSequence pads its entropy
        with zeros, so (job seed, stream, 0) seeds as (job seed, stream) does)."""
        indices = () if initialisation is None else (initialisation,)
        rng = np.random.default_rng(ga.derive_seed(self.seed, _INIT_STREAM, *indices))
        drawn = {name: float(rng.uniform(*INITIAL_RANGES[name])) for name in HYPERPARAMETERS}
        drawn["lr"], drawn["weight_decay"] = 10 ** drawn["lr"], 10 ** drawn["weight_decay"]
        drawn["momentum"] = min(max(drawn["momentum"], 1e-3), 1 - 1e-3)  # a finite logit
        return {**drawn, **{k: float(v) for k, v in self.initial.items()}}


class RawHyperparameters:
    """x = log10 η (one scalar, or one tensor per weight tensor), y = log10 ξ, z = logit μ:
    leaf tensors that the meta-optimiser steps."""

    def __init__(self, values: Mapping[str, float], shapes: Sequence[torch.Size] | None, dtype, device):
        def leaf(value: float, shape=()) -> torch.Tensor:
            return torch.full(shape, value, dtype=dtype, device=device, requires_grad=True)

        self.per_parameter = shapes is not None
        self.log_lr = (
            [leaf(math.log10(values["lr"]), s) for s in shapes]
            if shapes
            else [leaf(math.log10(values["lr"]))]
        )
        self.log_weight_decay = leaf(math.log10(values["weight_decay"]))
        mu = values["momentum"]
        self.logit_momentum = leaf(math.log(mu / (1 - mu)))

    def tensors(self, names: Sequence[str] = HYPERPARAMETERS) -> list[torch.Tensor]:
        by_name = {
            "lr": self.log_lr,
            "weight_decay": [self.log_weight_decay],
            "momentum": [self.logit_momentum],
        }
        return [t for name in names for t in by_name[name]]

    def lr(self, index: int) -> torch.Tensor:
        return 10 ** self.log_lr[index if self.per_parameter else 0]

    def weight_decay(self) -> torch.Tensor:
        return 10**self.log_weight_decay

    def momentum(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_momentum)

    @torch.no_grad()
    def clamp_(self) -> None:
        for x in self.log_lr:
            x.clamp_(*LOG_LR_RANGE)
        self.logit_momentum.clamp_(-LOGIT_LIMIT, LOGIT_LIMIT)

    @torch.no_grad()
    def values(self) -> dict[str, float]:
        """Current η (geometric mean over elements when per parameter), ξ and μ."""
        log_lr = torch.cat([x.reshape(-1) for x in self.log_lr]).double().mean()
        return {
            "lr": float(10**log_lr),
            "weight_decay": float(self.weight_decay()),
            "momentum": float(self.momentum()),
        }


LossAt = Callable[[list[torch.Tensor]], torch.Tensor]


def sgd_update(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    buffers: Sequence[torch.Tensor],
    raw: RawHyperparameters,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(u, new momentum buffers): b = μ·b + g + ξ·w, u = η·b (differentiable in w, g and raw)."""
    mu, xi = raw.momentum(), raw.weight_decay()
    new_buffers = [mu * b + g + xi * w for w, g, b in zip(weights, grads, buffers, strict=True)]
    return [raw.lr(k) * b for k, b in enumerate(new_buffers)], new_buffers


@dataclass
class HyperStep:
    """One differentiable step and its hypergradient (with respect to ``raw.tensors()``)."""

    weights: list[torch.Tensor]
    buffers: list[torch.Tensor]
    hypergradient: list[torch.Tensor]
    training_loss: float
    validation_loss: float


def implicit_hypergradient(
    train_loss_at: LossAt,
    validation_loss_at: LossAt,
    weights: Sequence[torch.Tensor],
    buffers: Sequence[torch.Tensor],
    raw: RawHyperparameters,
    lookback: int,
) -> HyperStep:
    """Take the step w_T = w_{T−1} − u(w_{T−1}, λ) and return dL_V(w_T)/d(raw) estimated with the
    ``lookback``-term Neumann series (module docstring), by VJPs only."""
    w = [t.detach().requires_grad_() for t in weights]
    loss = train_loss_at(w)
    grads = torch.autograd.grad(loss, w, create_graph=True)
    u, new_buffers = sgd_update(w, grads, [b.detach() for b in buffers], raw)
    w_next = [(wi - ui).detach().requires_grad_() for wi, ui in zip(w, u, strict=True)]
    validation = validation_loss_at(w_next)
    v = list(torch.autograd.grad(validation, w_next))
    p = list(v)
    for _ in range(lookback - 1):
        jv = torch.autograd.grad(u, w, grad_outputs=v, retain_graph=True)
        v = [vi - ji for vi, ji in zip(v, jv, strict=True)]
        p = [pi + vi for pi, vi in zip(p, v, strict=True)]
    grads_raw = torch.autograd.grad(u, raw.tensors(), grad_outputs=p, allow_unused=True)
    hypergradient = [
        -g if g is not None else torch.zeros_like(t) for g, t in zip(grads_raw, raw.tensors(), strict=True)
    ]
    return HyperStep(
        weights=[t.detach() for t in w_next],
        buffers=[b.detach() for b in new_buffers],
        hypergradient=hypergradient,
        training_loss=float(loss.detach()),
        validation_loss=float(validation.detach()),
    )


class _Bound(nn.Module):
    """Holds a task's model so that ``functional_call`` can run any of the task's loss methods
    with other weights in place of the model's parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        return loss_fn()


def _loss_at(task, loss_fn: Callable[[], torch.Tensor]) -> LossAt:
    bound = _Bound(task.model)
    names = [f"model.{name}" for name, _ in task.model.named_parameters()]

    def at(weights: list[torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(bound, dict(zip(names, weights, strict=True)), (loss_fn,))

    return at


@dataclass
class Episode:
    """The outcome of one run: one-pass, or (``updates`` False) the Random baseline.

    ``losses``: the training minibatch loss of every step taken, at the weights before it (kept in
    memory only; not written to the documents)."""

    initial: dict[str, float]
    final: dict[str, float]
    trajectory: list[dict[str, float]]
    metrics: dict[str, float]
    diverged: bool
    steps: int
    wall_time: float
    per_parameter_lr: dict[str, dict[str, float]] | None
    losses: list[float] = field(default_factory=list)


def _validation_objective(task, config: OnePassConfig, seed: int) -> Callable[[], torch.Tensor]:
    """The hyperparameter objective of ``config.validation`` (module docstring)."""
    if config.validation == "full":
        return task.validation_loss
    if not hasattr(task, "validation_minibatch_loss"):
        raise invalid(
            "task for validation 'minibatch'", config.task, "a task with validation minibatches, or 'full'"
        )
    generator = torch_generator(seed, _VALIDATION_STREAM)
    return lambda: task.validation_minibatch_loss(generator)


def run_episode(
    config: OnePassConfig,
    *,
    seed: int | None = None,
    emit: ev.EventSink = ev.ignore,
    updates: bool = True,
) -> Episode:
    """Train ``config.task`` (seeded with ``seed``, default the job seed) once from
    ``config.starting_values()``, tuning as it goes; a ``Checkpoint("update")`` after every
    hyperparameter update (lr: the geometric mean over the weights with per_parameter_lr).

    ``updates=False`` is the Random baseline: the same steps by the same update code with the
    hyperparameters held at their starting values (no hypergradient, no validation loss; plain
    ``torch.optim.SGD``); its trajectory records the values and the training loss at the end of
    every window of ``update_interval`` steps, and it emits nothing. Its ``final`` values are the
    starting values as stored raw in the task's dtype (η = 10^x: in float32 they differ from the
    starting values by rounding, ~1e-7 relative)."""
    seed = config.seed if seed is None else seed
    task = task_registry.build(config.task, seed=seed, device=config.device, **config.task_options)
    if not hasattr(task, "validation_loss"):
        raise invalid("task for onepass", config.task, "a task with a validation set, e.g. digits-mlp")
    named = list(task.model.named_parameters())
    params = [p for _, p in named]
    initial = config.starting_values()
    shapes = [p.shape for p in params] if config.per_parameter_lr else None
    raw = RawHyperparameters(initial, shapes, params[0].dtype, params[0].device)
    raw.clamp_()
    meta = torch.optim.Adam(raw.tensors(config.tuned), lr=config.meta_lr)
    train_at = _loss_at(task, task.train_loss)
    validation_at = _loss_at(task, _validation_objective(task, config, seed)) if updates else None
    weights = [p.detach().clone() for p in params]
    buffers = [torch.zeros_like(w) for w in weights]
    trajectory: list[dict[str, float]] = []
    losses: list[float] = []
    windows = math.ceil(config.steps / config.update_interval)
    step, diverged = 0, False
    start = time.perf_counter()
    while step < config.steps and not diverged:
        window = min(config.update_interval, config.steps - step)
        for _ in range(window - 1 if updates else window):
            w = [t.requires_grad_() for t in weights]
            loss = train_at(w)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                diverged = True
                break
            grads = torch.autograd.grad(loss, w)
            with torch.no_grad():
                u, buffers = sgd_update(w, grads, buffers, raw)
                weights = [wi.detach() - ui for wi, ui in zip(w, u, strict=True)]
        if diverged:
            break
        if not updates:
            step += window
            record = {"update": len(trajectory), "step": step, **raw.values(), "training_loss": losses[-1]}
            trajectory.append(record)
            continue
        hyper = implicit_hypergradient(train_at, validation_at, weights, buffers, raw, config.lookback)
        losses.append(hyper.training_loss)
        step += window
        if not (math.isfinite(hyper.training_loss) and math.isfinite(hyper.validation_loss)):
            diverged = True
            break
        weights, buffers = hyper.weights, hyper.buffers
        meta.zero_grad()
        for tensor, grad in zip(raw.tensors(), hyper.hypergradient, strict=True):
            tensor.grad = grad
        meta.step()
        raw.clamp_()
        record = {
            "update": len(trajectory),
            "step": step,
            **raw.values(),
            "training_loss": hyper.training_loss,
            "validation_loss": hyper.validation_loss,
        }
        trajectory.append(record)
        emit(ev.Checkpoint("update", record["update"], windows, record))
    if not diverged and not all(bool(torch.isfinite(w).all()) for w in weights):
        diverged = True  # the last step overflowed: no loss was taken at its weights
    wall = time.perf_counter() - start
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)
    per_parameter = None
    if config.per_parameter_lr:
        per_parameter = {
            name: {
                "geometric_mean": float(10 ** x.detach().double().mean()),
                "min": float(10 ** x.detach().min()),
                "max": float(10 ** x.detach().max()),
            }
            for (name, _), x in zip(named, raw.log_lr, strict=True)
        }
    return Episode(
        initial=initial,
        final=raw.values(),
        trajectory=trajectory,
        metrics={} if diverged else task.metrics(),
        diverged=diverged,
        steps=step,
        wall_time=wall,
        per_parameter_lr=per_parameter,
        losses=losses,
    )


def tune_onepass(config: OnePassConfig, ctx: JobContext) -> dict[str, Any]:
    """Run one one-pass episode with the job seed; returns the hyperparameters document, also
    written to the run dir. ``hyperparameters`` are the values at the end of training (lr: the
    geometric mean over weights with ``per_parameter_lr``); ``metrics`` those of the trained model.
    Not resumable: a restarted job (``ctx.history`` given) runs its episode again."""
    run_dir = ctx.run_dir
    run_dir.claim(config.to_dict(), resume=False, stored=ctx.history is not None)
    ctx.emit(
        ev.PhaseStarted("tuning", "onepass", math.ceil(config.steps / config.update_interval), "updates")
    )
    episode = run_episode(config, emit=ctx.emit)
    document = {
        "strategy": "onepass",
        "task": config.task,
        "optimizer": "sgd",
        "inner_optimizer": "SGD with heavy-ball momentum and coupled weight decay (torch.optim.SGD)",
        "hyperparameters": episode.final,
        "transforms": dict(TRANSFORMS),
        "settings": config.to_dict(),
        "initial": episode.initial,
        "trajectory": episode.trajectory,
        "metrics": episode.metrics,
        "diverged": episode.diverged,
        "steps": episode.steps,
        "steps_source": config.steps_source,
        "validation": config.validation,
        "wall_time": episode.wall_time,
        "per_parameter_lr": episode.per_parameter_lr,
        "job_seed": config.seed,
        "trial_seeds": "the task is seeded with the job seed; the starting values derive from it",
        "task_options": dict(config.task_options),
        "versions": versions(),
    }
    write_json(run_dir.hyperparameters_path, document)
    return document


EPISODES_FILE = "episodes.jsonl"
_EPISODE_KEYS = ("initialisations", "steps_source")  # settings that do not change any one episode
_RECORD_FIELDS = ("key", "method", "initialisation", "seed", "initial", "final", "metrics", "diverged")
_RECORD_FIELDS += ("steps", "wall_time")


def bootstrap_mean(values: Sequence[float | None], *, resamples: int, seed: int = 0) -> dict[str, Any]:
    """The mean of ``values`` and the mean ± std of the means of ``resamples`` bootstrap resamples
    (with replacement), drawn as :func:`tuner.summary.bootstrap_median` draws its resamples (the
    same ``seed`` gives the same resamples, so the two statistics describe one set of them).
    Non-finite values are left out; all None when nothing finite is left."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return {"mean": None, "bootstrap_mean": None, "bootstrap_std": None, "runs": 0}
    rng = np.random.default_rng(seed)
    means = rng.choice(finite, size=(resamples, finite.size), replace=True).mean(axis=1)
    return {
        "mean": float(finite.mean()),
        "bootstrap_mean": float(means.mean()),
        "bootstrap_std": float(means.std()),
        "runs": int(finite.size),
    }


def _higher_is_better(metric: str) -> bool:
    return metric.endswith("accuracy")


def _best_run(records: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
    """The single run with the best finite ``metric`` (highest accuracy, else lowest), the
    first such initialisation on a tie."""
    scored = [
        (r["metrics"][metric], r)
        for r in records
        if isinstance(r["metrics"].get(metric), (int, float)) and math.isfinite(r["metrics"][metric])
    ]
    if not scored:
        return None
    sign = -1.0 if _higher_is_better(metric) else 1.0
    value, record = min(scored, key=lambda pair: (sign * pair[0], pair[1]["initialisation"]))
    return {"value": value, "initialisation": record["initialisation"], "seed": record["seed"]}


def summarize_method(records: Sequence[Mapping[str, Any]], *, resamples: int, seed: int) -> dict[str, Any]:
    """One method's runs (per-run records) over the initialisations: per final metric the
    bootstrap mean of the means and of the medians (each ± the std over the resamples) and the
    best single run; the same for the final hyperparameters (no best); the diverged runs are
    counted and left out."""
    ok = [r for r in records if not r["diverged"]]
    names = sorted({k for r in ok for k in r["metrics"]})
    metrics = {}
    for name in names:
        values = [r["metrics"].get(name) for r in ok]
        metrics[name] = {
            "mean": bootstrap_mean(values, resamples=resamples, seed=seed),
            "median": bootstrap_median(values, resamples=resamples, seed=seed),
            "best": _best_run(ok, name),
            "better": "higher" if _higher_is_better(name) else "lower",
        }
    hyperparameters = {}
    for name in HYPERPARAMETERS:
        values = [r["final"][name] for r in ok]
        hyperparameters[name] = {
            "mean": bootstrap_mean(values, resamples=resamples, seed=seed),
            "median": bootstrap_median(values, resamples=resamples, seed=seed),
        }
    return {
        "runs": len(records),
        "diverged": len(records) - len(ok),
        "metrics": metrics,
        "final_hyperparameters": hyperparameters,
        "wall_time": float(sum(r["wall_time"] for r in records)),
    }


def _episode_key(config: OnePassConfig, method: str, initialisation: int, seed: int) -> str:
    """What makes an episode the same episode: every setting but K (and where ``steps`` came
    from), the method, the initialisation and the seed."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _EPISODE_KEYS}
    blob = json.dumps(
        {"settings": settings, "method": method, "initialisation": initialisation, "seed": seed},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_episodes(path: Path) -> dict[str, dict[str, Any]]:
    """The finished episodes of ``path`` (one JSON record a line) by their key; a torn, unreadable
    or incomplete line (a kill mid-write) is left out, and so its episode runs again; of two lines
    with one key the first counts."""
    if not path.exists():
        return {}
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and all(k in record for k in _RECORD_FIELDS):
            records.setdefault(record["key"], record)
    return records


def _append_episode(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line, flushed and fsync'd (after a newline if a torn line ends the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as handle:
        handle.write(("\n" if torn else "") + json.dumps(record, allow_nan=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _run_record(
    config: OnePassConfig, method: str, initialisation: int, seed: int, key: str
) -> dict[str, Any]:
    """Run one episode of the evaluation and return its per-run record (as JSON reads it back)."""
    start = config.starting_values(initialisation)
    episode = run_episode(dataclasses.replace(config, initial=start), seed=seed, updates=method == "onepass")
    record = {
        "key": key,
        "method": method,
        "initialisation": initialisation,
        "seed": seed,
        "initial": episode.initial,
        "final": episode.final,
        "metrics": episode.metrics,
        "diverged": episode.diverged,
        "steps": episode.steps,
        "wall_time": episode.wall_time,
    }
    if episode.per_parameter_lr is not None:
        record["per_parameter_lr"] = episode.per_parameter_lr
    return json.loads(json.dumps(record, allow_nan=True))


def evaluate_onepass(
    config: OnePassConfig,
    *,
    out_dir,
    resamples: int = 1000,
    emit: ev.EventSink = ev.ignore,
) -> dict[str, Any]:
    """The paper's protocol (module docstring): ``config.initialisations`` (K) random
    initialisations, each trained by one-pass and by the Random baseline (2K episodes, in the
    order initialisation 0 one-pass, 0 random, 1 one-pass, …), summarised per method by
    :func:`summarize_method` (``resamples`` bootstrap resamples, 1000 as §5.7, seeded by the job
    seed). Each finished episode is appended to ``out_dir/episodes.jsonl``; an episode already
    there for the same settings (every one but K), method, initialisation and seed is read back,
    not run again (``reused_episodes`` counts them; they are reported with ``reused=True``).
    Writes ``out_dir/results.json``."""
    check_int_at_least("resamples", resamples, 1)
    out_dir = Path(out_dir)
    log = out_dir / EPISODES_FILE
    count = config.initialisations
    seeds = [ga.evaluation_seed(config.seed, r) for r in range(count)]
    kept = read_episodes(log)
    total = len(METHODS) * count
    emit(ev.PhaseStarted("evaluation", "onepass", total, "runs"))
    records: list[dict[str, Any]] = []
    reused = 0
    for r, seed in enumerate(seeds):
        for method in METHODS:
            key = _episode_key(config, method, r, seed)
            record = kept.get(key)
            was_kept = record is not None
            if record is None:
                record = _run_record(config, method, r, seed, key)
                _append_episode(log, record)
            reused += was_kept
            records.append(record)
            status = "diverged" if record["diverged"] else "ok"
            emit(ev.EvaluationRunFinished(len(records) - 1, total, method, seed, status, reused=was_kept))
    by_method = {m: [rec for rec in records if rec["method"] == m] for m in METHODS}
    document = {
        "strategy": "onepass",
        "task": config.task,
        "steps": config.steps,
        "steps_source": config.steps_source,
        "validation": config.validation,
        "initialisations": count,
        "methods": dict(METHOD_DESCRIPTIONS),
        "job_seed": config.seed,
        "seeds": seeds,
        "initial": [config.starting_values(r) for r in range(count)],
        "resamples": resamples,
        "statistics": (
            "per method, over its runs that did not diverge (diverged runs are counted, not scored): "
            "mean ± std of the bootstrap means and of the bootstrap medians of each final metric "
            f"({resamples} resamples with replacement, seeded by the job seed; clarke.md §5.7), "
            "and the best single run"
        ),
        "diverged": sum(rec["diverged"] for rec in records),
        "summary": {
            m: summarize_method(by_method[m], resamples=resamples, seed=config.seed) for m in METHODS
        },
        "per_run": records,
        "settings": config.to_dict(),
        "task_options": dict(config.task_options),
        "episodes": EPISODES_FILE,  # beside this document: every episode, one line each
        "reused_episodes": reused,  # finished before a restart, read back from episodes.jsonl
        "versions": versions(),
    }
    write_json(out_dir / "results.json", document)
    return document


def paired_finals(results: Mapping[str, Any], metric: str) -> dict[int, tuple[float, float]]:
    """Initialisation → its final ``metric`` after (Random, one-pass), for the initialisations
    both of whose runs finished with a finite value (an :func:`evaluate_onepass` document)."""
    by_method: dict[str, dict[int, float]] = {method: {} for method in METHODS}
    for record in results["per_run"]:
        value = record["metrics"].get(metric)
        if not record["diverged"] and isinstance(value, (int, float)) and math.isfinite(value):
            by_method[record["method"]][record["initialisation"]] = value
    shared = sorted(set(by_method["random"]) & set(by_method["onepass"]))
    return {r: (by_method["random"][r], by_method["onepass"][r]) for r in shared}


class OnePassOptions(StrategyOptions):
    """One-pass's settings (clarke.md §5); steps count weight updates."""

    name = "onepass"
    strategy: Literal["onepass"] = "onepass"
    steps: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description=(
            "Training steps of every episode (default: the paper's, clarke.md §5.5: UCI 4000, "
            "fashion-mnist-mlp 10000, scaled by step_scale; other tasks: the task's final length)."
        ),
    )
    update_interval: int = Field(10, ge=1, le=100_000_000, description="Steps per hyperparameter update.")
    lookback: int = Field(5, ge=1, le=1000, description="Neumann series terms.")
    meta_lr: float = Field(
        0.05, gt=0, le=1000, allow_inf_nan=False, description="The meta-Adam's learning rate."
    )
    per_parameter_lr: bool = False
    tuned: list[Literal["lr", "weight_decay", "momentum"]] = Field(
        default_factory=lambda: list(HYPERPARAMETERS), min_length=1, description="Hyperparameters to tune."
    )
    initial: dict[Literal["lr", "weight_decay", "momentum"], Annotated[float, Field(allow_inf_nan=False)]] = (
        Field(
            default_factory=dict,
            description="Starting values, the same for every initialisation; the others are drawn (§5.3).",
        )
    )
    initialisations: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Random initialisations of the evaluation, each run by one-pass and by Random (§5.7).",
    )
    validation: Literal["minibatch", "full"] = Field(
        "minibatch",
        description=(
            "The objective: a validation minibatch of the training batch size (the paper), or the whole set."
        ),
    )


class OnePass:
    """The registry's ``onepass`` entry."""

    name = "onepass"
    summary_line = (
        "one-pass implicit-differentiation tuning of SGD's lr, weight decay and momentum "
        "(Clarke et al. 2022, clarke.md §5)"
    )
    Options = OnePassOptions
    resumable = False
    default_seeds = 8  # unused: its evaluation runs `initialisations` episodes per method
    tunes_optimizer = False

    def config(self, job: TuneJob) -> OnePassConfig:
        options: OnePassOptions = job.options
        settings = options.model_dump(exclude={"strategy"})
        settings["steps"], settings["steps_source"] = resolve_steps(job.task, options.steps, job.step_scale)
        settings["tuned"] = tuple(settings["tuned"])
        return OnePassConfig(
            job.task, **settings, seed=job.seed, task_options=dict(job.task_options), device=job.device
        )

    def check(self, job: TuneJob) -> None:
        self.config(job)

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]:
        return tune_onepass(self.config(job), ctx)

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """The paper's protocol: one-pass and Random from ``initialisations`` random
        initialisations (:func:`evaluate_onepass`); ``job.seeds`` plays no part."""
        return evaluate_onepass(self.config(job), out_dir=ctx.evaluation_path, emit=ctx.emit)

    def summary(self, document: dict[str, Any]) -> Summary:
        rows = [
            (name, f"{document['initial'][name]:.6g}", f"{value:.6g}", document["transforms"][name])
            for name, value in document["hyperparameters"].items()
        ]
        flag = " (diverged)" if document["diverged"] else ""
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in document["metrics"].items())
        line = f"trained model after {document['steps']} steps: {metrics}{flag}"
        title = f"one-pass SGD on {document['task']}"
        return Summary(title, ("hyperparameter", "start", "end", "transform"), rows, [line])

    def results_summary(self, results: dict[str, Any]) -> list[Summary]:
        def pm(stat: dict[str, Any]) -> str:
            if stat["bootstrap_mean"] is None:
                return "—"
            return f"{stat['bootstrap_mean']:.6g} ± {stat['bootstrap_std']:.2g}"

        rows = []
        for method, summary in results["summary"].items():
            for quantity, stat in summary["metrics"].items():
                best = stat["best"]
                shown = "—" if best is None else f"{best['value']:.6g} (init {best['initialisation']})"
                rows.append((method, quantity, pm(stat["mean"]), pm(stat["median"]), shown))
        diverged = ", ".join(f"{m} {s['diverged']}/{s['runs']}" for m, s in results["summary"].items())
        title = (
            f"{results['task']}: one-pass vs Random from {results['initialisations']} random "
            f"initialisations × {results['steps']} steps ({results['steps_source']})"
        )
        lines = [
            f"diverged (counted, left out of the statistics): {diverged}",
            f"bootstrap: {results['resamples']} resamples of the runs; validation objective: "
            f"{results['validation']}; Random trains on the train split only (the paper's on train + val)",
        ]
        columns = ("method", "quantity", "bootstrap mean of means", "bootstrap mean of medians", "best run")
        return [Summary(title, columns, rows, lines)]

    def describe(self) -> dict[str, Any]:
        defaults = OnePassConfig("digits-mlp")
        settings = {
            k: v
            for k, v in defaults.to_dict().items()
            if k not in ("strategy", "task", "steps_source", "steps")
        }
        return {
            "name": self.name,
            "summary": self.summary_line,
            "optimizers": ["sgd (built in: momentum + coupled weight decay)"],
            "settings": {"steps": None, **settings},
            "default_steps": {
                **PAPER_STEPS,
                "other tasks": "the task's final length",
                "scaled": "by step_scale",
                "source": PAPER_STEPS_SOURCE,
            },
            "evaluation": (
                "initialisations × (one-pass, Random) episodes of steps each; per method the bootstrap "
                "mean of means and of medians of each final metric, and the best run (clarke.md §5.7)"
            ),
            "options": OnePassOptions.model_json_schema(),
            "unit": "steps count weight updates; one hyperparameter update every update_interval steps",
        }


STRATEGY = OnePass()
