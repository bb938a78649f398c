"""The LODO paper's genetic algorithm as a pure ask/tell (reference/lodo.md §3.2).

A state is immutable data: the generation to ask next and the current mean in normalized
coordinates. ``ask`` samples a population around the mean; ``tell`` takes one fitness per
individual and returns the next state. Nothing here knows how trials run.

* Generation 0's mean is the optimizer's defaults, normalized.
* Individual i of generation g: coordinates = mean + σ_g·z, z ~ N(0, I) — the same σ_g on every
  normalized coordinate — decoded to the values the trial uses; its seed derives from
  (job seed, g, i).
* Fitness = mean training loss from evaluation ⌊0.9·T⌋ to the end of a T + 1 evaluation run;
  non-finite → +∞.
* Elite = the best min(#finite, ⌊pop/2⌋) individuals; the next mean is the mean of their
  normalized coordinates *re-encoded from the values actually used*, so a decay sampled at
  u > 0 (decoded to 0) enters as u = 0. No elitism, no crossover.
* A generation in which every individual diverged keeps its mean and is flagged (the
  reference code would have produced NaN).
* The tuned result is the mean after the last generation, decoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATE_VERSION = 1
_GA_STREAM, _EVAL_STREAM, _STUDY_STREAM = 0x6A, 0xE7, 0x5D


def derive_seed(job_seed: int, stream: int, *indices: int) -> int:
    """A 31-bit seed that depends only on its arguments (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([job_seed, stream, *indices]).generate_state(1)[0] & 0x7FFFFFFF)


def trial_seed(job_seed: int, generation: int, individual: int) -> int:
    return derive_seed(job_seed, _GA_STREAM, generation, individual)


def evaluation_seed(job_seed: int, run: int) -> int:
    return derive_seed(job_seed, _EVAL_STREAM, run)


def study_seeds(job_seed: int, studies: int) -> list[int]:
    """The seeds of a job's independent GA studies (:mod:`tuner.studies`), each the job seed of
    its GA run: study 0 runs at the job seed itself (so study 0 of K is the single-study run);
    study k >= 1 at ``derive_seed(job_seed, study stream, k)``, drawn again as
    ``derive_seed(job_seed, study stream, k, r)`` for r = 1, 2, … while it equals an earlier
    study's seed, so no two studies of a job share one. Study k's seed does not depend on K."""
    seeds = [job_seed]
    for k in range(1, studies):
        seed, redraw = derive_seed(job_seed, _STUDY_STREAM, k), 0
        while seed in seeds:
            redraw += 1
            seed = derive_seed(job_seed, _STUDY_STREAM, k, redraw)
        seeds.append(seed)
    return seeds


def fitness(losses: Sequence[float], steps: int) -> float:
    """Mean of the losses from row ⌊0.9·T⌋ to the end of a run of T + 1 evaluations; +∞ when
    the run did not finish or any of those losses is not finite."""
    if len(losses) < steps + 1:
        return math.inf
    tail = losses[math.floor(0.9 * steps) :]
    if not all(math.isfinite(v) for v in tail):
        return math.inf
    return float(sum(tail) / len(tail))


@dataclass(frozen=True)
class Individual:
    index: int
    seed: int
    coords: dict[str, float]
    values: dict[str, float]


@dataclass(frozen=True)
class GAState:
    """What the GA needs to continue: versioned, JSON-serialisable, never mutated."""

    job_seed: int
    generation: int
    mean: dict[str, float]
    diverged_generations: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "job_seed": self.job_seed,
            "generation": self.generation,
            "mean": dict(self.mean),
            "diverged_generations": list(self.diverged_generations),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GAState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"Invalid GA state version: {data.get('version')!r} (allowed: {STATE_VERSION})")
        return cls(
            job_seed=int(data["job_seed"]),
            generation=int(data["generation"]),
            mean={k: float(v) for k, v in data["mean"].items()},
            diverged_generations=tuple(int(g) for g in data["diverged_generations"]),
        )


@dataclass(frozen=True)
class Told:
    """The outcome of one generation: its fitnesses, elite and the next state."""

    fitnesses: list[float]
    elite: list[int]
    all_diverged: bool
    state: GAState


def init(space, defaults: Mapping[str, float], job_seed: int) -> GAState:
    """Generation 0 centred on ``defaults`` (encoded with the search space's transforms)."""
    return GAState(job_seed=job_seed, generation=0, mean=space.encode(defaults))


def ask(state: GAState, space, sigma: float, population: int) -> list[Individual]:
    """The population of ``state.generation``: deterministic given the state."""
    names = list(space.names)
    rng = np.random.default_rng(np.random.SeedSequence([state.job_seed, _GA_STREAM, state.generation]))
    noise = rng.standard_normal((population, len(names)))
    individuals = []
    for i in range(population):
        coords = {name: state.mean[name] + sigma * float(noise[i, j]) for j, name in enumerate(names)}
        individuals.append(
            Individual(
                index=i,
                seed=trial_seed(state.job_seed, state.generation, i),
                coords=coords,
                values=space.decode(coords),
            )
        )
    return individuals


def tell(state: GAState, space, population: Sequence[Individual], fitnesses: Sequence[float]) -> Told:
    """The next state from one fitness per individual (lower is better)."""
    if len(fitnesses) != len(population):
        raise ValueError(f"Invalid fitnesses: {len(fitnesses)} values for {len(population)} individuals")
    clean = [f if math.isfinite(f) else math.inf for f in fitnesses]
    finite = sum(math.isfinite(f) for f in clean)
    k = min(finite, len(population) // 2)
    order = sorted(range(len(population)), key=lambda i: (clean[i], i))
    elite = order[:k]
    if k == 0:
        next_state = GAState(
            job_seed=state.job_seed,
            generation=state.generation + 1,
            mean=dict(state.mean),
            diverged_generations=(*state.diverged_generations, state.generation),
        )
        return Told(clean, [], True, next_state)
    used = [space.encode(population[i].values) for i in elite]
    mean = {name: math.fsum(u[name] for u in used) / k for name in space.names}
    next_state = GAState(state.job_seed, state.generation + 1, mean, state.diverged_generations)
    return Told(clean, elite, False, next_state)


def result(state: GAState, space) -> dict[str, float]:
    """The tuned hyperparameters: the current mean, decoded."""
    return space.decode(state.mean)
