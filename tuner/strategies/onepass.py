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
(lr 0.05) on the raw values. The weights are never reset. The objective is
``task.validation_loss()``: the whole validation set (the authors use a validation minibatch of the
training batch size, except on UCI where it is the whole set).

Differences from the authors' code, chosen here: the logit of μ is also clamped, to
[−LOGIT_LIMIT, LOGIT_LIMIT], so μ cannot reach 1 (clarke.md §7.4); a final window shorter than T
(when ``steps`` is not a multiple of it) still ends with a hyperparameter update.

Needs a task with ``validation_loss()`` (the supervised MLP tasks).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

import tasks as task_registry
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


@dataclass(frozen=True)
class OnePassConfig:
    """One one-pass tuning run: task, length, the method's settings, the starting values.

    ``initial`` gives the starting lr, weight_decay and momentum; any left out are drawn as §5.3
    does, from the job seed. ``tuned`` names the hyperparameters the hypergradient moves; the
    others stay at their starting values (the paper's variants: all three, lr + weight_decay,
    weight_decay only = Lorraine et al.).
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

    def __post_init__(self):
        if self.task not in task_registry.TASK_NAMES:
            raise invalid("task", self.task, " | ".join(task_registry.TASK_NAMES))
        check_int_at_least("steps", self.steps, 1)
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
        }

    def starting_values(self) -> dict[str, float]:
        """``initial``, completed by §5.3's random draws (seeded by the job seed)."""
        rng = np.random.default_rng(ga.derive_seed(self.seed, _INIT_STREAM))
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
    """The outcome of one one-pass run."""

    initial: dict[str, float]
    final: dict[str, float]
    trajectory: list[dict[str, float]]
    metrics: dict[str, float]
    diverged: bool
    steps: int
    wall_time: float
    per_parameter_lr: dict[str, dict[str, float]] | None


def run_episode(config: OnePassConfig, *, seed: int | None = None, emit: ev.EventSink = ev.ignore) -> Episode:
    """Train ``config.task`` (seeded with ``seed``, default the job seed) once, tuning as it goes;
    a ``Checkpoint("update")`` after every hyperparameter update (lr: the geometric mean over the
    weights with per_parameter_lr)."""
    task = task_registry.build(
        config.task, seed=config.seed if seed is None else seed, device=config.device, **config.task_options
    )
    if not hasattr(task, "validation_loss"):
        raise invalid("task for onepass", config.task, "a task with a validation set, e.g. digits-mlp")
    named = list(task.model.named_parameters())
    params = [p for _, p in named]
    initial = config.starting_values()
    shapes = [p.shape for p in params] if config.per_parameter_lr else None
    raw = RawHyperparameters(initial, shapes, params[0].dtype, params[0].device)
    raw.clamp_()
    meta = torch.optim.Adam(raw.tensors(config.tuned), lr=config.meta_lr)
    train_at, validation_at = _loss_at(task, task.train_loss), _loss_at(task, task.validation_loss)
    weights = [p.detach().clone() for p in params]
    buffers = [torch.zeros_like(w) for w in weights]
    trajectory: list[dict[str, float]] = []
    updates = math.ceil(config.steps / config.update_interval)
    step, diverged = 0, False
    start = time.perf_counter()
    while step < config.steps and not diverged:
        window = min(config.update_interval, config.steps - step)
        for _ in range(window - 1):
            w = [t.requires_grad_() for t in weights]
            loss = train_at(w)
            if not math.isfinite(float(loss.detach())):
                diverged = True
                break
            grads = torch.autograd.grad(loss, w)
            with torch.no_grad():
                u, buffers = sgd_update(w, grads, buffers, raw)
                weights = [wi.detach() - ui for wi, ui in zip(w, u, strict=True)]
        if diverged:
            break
        hyper = implicit_hypergradient(train_at, validation_at, weights, buffers, raw, config.lookback)
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
        emit(ev.Checkpoint("update", record["update"], updates, record))
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
        "wall_time": episode.wall_time,
        "per_parameter_lr": episode.per_parameter_lr,
        "job_seed": config.seed,
        "trial_seeds": "the task is seeded with the job seed; the starting values derive from it",
        "task_options": dict(config.task_options),
        "versions": versions(),
    }
    write_json(run_dir.hyperparameters_path, document)
    return document


def evaluate_onepass(
    config: OnePassConfig,
    *,
    seeds: int,
    out_dir,
    resamples: int = 1000,
    emit: ev.EventSink = ev.ignore,
) -> dict[str, Any]:
    """Repeat the one-pass run from the same starting values on ``seeds`` evaluation seeds (fresh
    initialisation and batch order each) and summarise the final metrics and hyperparameters by
    the median with a bootstrap spread (``resamples`` resamples, 1000 as §5.7). Writes
    ``out_dir/results.json``."""
    if seeds < 1:
        raise invalid("seeds", seeds, "an integer >= 1")
    fixed = dataclasses.replace(config, initial=config.starting_values())
    run_seeds = [ga.evaluation_seed(config.seed, r) for r in range(seeds)]
    episodes = []
    emit(ev.PhaseStarted("evaluation", "onepass", seeds, "runs"))
    for index, seed in enumerate(run_seeds):
        episodes.append(run_episode(fixed, seed=seed))
        status = "diverged" if episodes[-1].diverged else "ok"
        emit(ev.EvaluationRunFinished(index, seeds, "sgd", seed, status))
    metric_names = sorted({k for e in episodes for k in e.metrics})
    summary = {
        k: bootstrap_median([e.metrics.get(k) for e in episodes], resamples=resamples, seed=config.seed)
        for k in metric_names
    }
    for name in HYPERPARAMETERS:
        summary[f"final_{name}"] = bootstrap_median(
            [e.final[name] for e in episodes if not e.diverged], resamples=resamples, seed=config.seed
        )
    document = {
        "strategy": "onepass",
        "task": config.task,
        "steps": config.steps,
        "seeds": run_seeds,
        "job_seed": config.seed,
        "initial": fixed.initial,
        "resamples": resamples,
        "diverged": sum(e.diverged for e in episodes),
        "summary": summary,
        "per_run": [
            {
                "seed": seed,
                "diverged": e.diverged,
                "final": e.final,
                "metrics": e.metrics,
                "wall_time": e.wall_time,
            }
            for seed, e in zip(run_seeds, episodes, strict=True)
        ],
    }
    write_json(out_dir / "results.json", document)
    return document


class OnePassOptions(StrategyOptions):
    """One-pass's settings (clarke.md §5); steps count weight updates."""

    name = "onepass"
    strategy: Literal["onepass"] = "onepass"
    steps: int | None = Field(
        None, ge=1, le=100_000_000, description="Training steps (default: the task's final length)."
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
        Field(default_factory=dict, description="Starting values; the others are drawn (§5.3).")
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
    tunes_optimizer = False

    def config(self, job: TuneJob) -> OnePassConfig:
        options: OnePassOptions = job.options
        settings = options.model_dump(exclude={"strategy"})
        settings["steps"] = options.steps or final.final_length(job.task, job.step_scale)
        settings["tuned"] = tuple(settings["tuned"])
        return OnePassConfig(
            job.task, **settings, seed=job.seed, task_options=dict(job.task_options), device=job.device
        )

    def check(self, job: TuneJob) -> None:
        self.config(job)

    def tune(self, job: TuneJob, ctx: JobContext) -> dict[str, Any]:
        return tune_onepass(self.config(job), ctx)

    def evaluate(self, job: TuneJob, document: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """The episode again from the same starting values on ``job.seeds`` seeds (bootstrap medians)."""
        return evaluate_onepass(self.config(job), seeds=job.seeds, out_dir=ctx.evaluation_path, emit=ctx.emit)

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
        rows = [
            (quantity, f"{s['median']:.6g}", f"{s['bootstrap_mean']:.6g} ± {s['bootstrap_std']:.2g}")
            for quantity, s in results["summary"].items()
            if s["median"] is not None
        ]
        title = (
            f"{results['task']}: one-pass over {len(results['seeds'])} seeds ({results['diverged']} diverged)"
        )
        return [Summary(title, ("quantity", "median", "bootstrap median (mean ± std)"), rows)]

    def describe(self) -> dict[str, Any]:
        defaults = OnePassConfig("digits-mlp")
        return {
            "name": self.name,
            "summary": self.summary_line,
            "optimizers": ["sgd (built in: momentum + coupled weight decay)"],
            "settings": {k: v for k, v in defaults.to_dict().items() if k not in ("strategy", "task")},
            "options": OnePassOptions.model_json_schema(),
            "unit": "steps count weight updates; one hyperparameter update every update_interval steps",
        }


STRATEGY = OnePass()
