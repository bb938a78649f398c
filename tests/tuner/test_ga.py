"""The GA's ask/tell against hand computations and synthetic fitness functions."""

from __future__ import annotations

import json
import math

import pytest

from tuner import ga


class LogSpace:
    """A two-coordinate space: ``rate`` in log space, ``decay`` in log(1 − x) clipped at 0."""

    names = ("rate", "decay")

    def encode(self, values):
        return {"rate": math.log(values["rate"]), "decay": math.log(max(1e-30, 1 - values["decay"]))}

    def decode(self, coords):
        return {"rate": math.exp(coords["rate"]), "decay": max(0.0, 1 - math.exp(coords["decay"]))}


SPACE = LogSpace()
DEFAULTS = {"rate": 1e-3, "decay": 0.9}


def test_seeds_derive_from_job_generation_individual():
    assert ga.trial_seed(0, 1, 2) == ga.trial_seed(0, 1, 2)
    seeds = {ga.trial_seed(j, g, i) for j in range(2) for g in range(3) for i in range(32)}
    assert len(seeds) == 2 * 3 * 32
    assert ga.evaluation_seed(0, 0) != ga.trial_seed(0, 0, 0)
    assert all(0 <= s < 2**31 for s in seeds)


def test_generation_zero_is_centred_on_defaults_with_sigma_noise():
    state = ga.init(SPACE, DEFAULTS, job_seed=3)
    assert state.mean == pytest.approx({"rate": math.log(1e-3), "decay": math.log(0.1)})
    population = ga.ask(state, SPACE, sigma=2.0, population=4000)
    for name in SPACE.names:
        offsets = [(ind.coords[name] - state.mean[name]) / 2.0 for ind in population]
        mean = sum(offsets) / len(offsets)
        var = sum((o - mean) ** 2 for o in offsets) / len(offsets)
        assert abs(mean) < 0.06 and abs(var - 1.0) < 0.08
    assert ga.ask(state, SPACE, 2.0, 5) == ga.ask(state, SPACE, 2.0, 5)


def test_fitness_is_the_tail_mean_of_t_plus_one_evaluations():
    losses = [float(i) for i in range(201)]  # T = 200 → rows 180..200
    assert ga.fitness(losses, 200) == pytest.approx(sum(range(180, 201)) / 21)
    assert ga.fitness(losses[:150], 200) == math.inf
    assert ga.fitness([*losses[:190], math.nan, *losses[191:]], 200) == math.inf


def test_elite_is_best_half_of_finite_and_mean_uses_values_actually_used():
    state = ga.GAState(job_seed=0, generation=0, mean={"rate": 0.0, "decay": 0.0})
    population = [
        ga.Individual(i, 0, {"rate": float(i), "decay": 0.5 if i == 1 else -1.0}, {}) for i in range(6)
    ]
    population = [ga.Individual(ind.index, 0, ind.coords, SPACE.decode(ind.coords)) for ind in population]
    fitnesses = [5.0, 1.0, math.nan, 2.0, math.inf, -math.inf]
    told = ga.tell(state, SPACE, population, fitnesses)
    # −∞ is not finite: it goes to the bottom with NaN and +∞; 3 finite → elite min(3, 3) = 3.
    assert told.elite == [1, 3, 0]
    assert told.fitnesses[2] == math.inf and told.fitnesses[5] == math.inf
    # Individual 1 sampled decay u = 0.5 > 0, which decodes to 0 and re-encodes to u = 0.
    assert told.state.mean["decay"] == pytest.approx((0.0 - 1.0 - 1.0) / 3)
    assert told.state.mean["rate"] == pytest.approx((1 + 3 + 0) / 3)
    assert told.state.generation == 1 and not told.all_diverged


def test_fewer_finite_than_half_shrinks_the_elite():
    state = ga.init(SPACE, DEFAULTS, 0)
    population = ga.ask(state, SPACE, 1.0, 8)
    told = ga.tell(state, SPACE, population, [math.inf] * 7 + [1.0])
    assert told.elite == [7]
    assert told.state.mean == pytest.approx(SPACE.encode(population[7].values))


def test_all_diverged_generation_keeps_its_mean_and_is_flagged():
    state = ga.init(SPACE, DEFAULTS, 0)
    population = ga.ask(state, SPACE, 1.0, 4)
    told = ga.tell(state, SPACE, population, [math.nan] * 4)
    assert told.all_diverged and told.elite == []
    assert told.state.mean == state.mean
    assert told.state.diverged_generations == (0,)
    assert all(math.isfinite(v) for v in told.state.mean.values())


def test_ga_converges_on_a_synthetic_fitness_with_known_optimum():
    """Fitness (log rate − log 0.05)² + (log(1 − decay) − log 0.02)²: optimum rate 0.05, decay 0.98."""
    target = {"rate": math.log(0.05), "decay": math.log(0.02)}
    state = ga.init(SPACE, DEFAULTS, job_seed=1)
    for sigma in [3, 3, 3, 2.5, 2, 1.5, 1, 0.75, 0.5, 0.3, 0.2, 0.1]:
        population = ga.ask(state, SPACE, sigma, 32)
        scores = [sum((SPACE.encode(i.values)[k] - target[k]) ** 2 for k in target) for i in population]
        state = ga.tell(state, SPACE, population, scores).state
    tuned = ga.result(state, SPACE)
    assert tuned["rate"] == pytest.approx(0.05, rel=0.1)
    assert tuned["decay"] == pytest.approx(0.98, abs=0.004)


def test_state_round_trips_through_json_exactly():
    state = ga.init(SPACE, DEFAULTS, 5)
    population = ga.ask(state, SPACE, 2.0, 16)
    state = ga.tell(state, SPACE, population, [float(i) for i in range(16)]).state
    again = ga.GAState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert ga.ask(again, SPACE, 1.0, 16) == ga.ask(state, SPACE, 1.0, 16)
    with pytest.raises(ValueError, match="GA state version"):
        ga.GAState.from_dict({**state.to_dict(), "version": 99})
