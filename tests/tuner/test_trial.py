"""run_trial and the evaluation window against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tuner.summary import summarize, window_mean
from tuner.trial import TrialSpec, run_trial


def test_window_is_strictly_inside_point_nine_m_and_m():
    losses = [float(i) for i in range(1, 201)]  # loss at evaluation i is i
    assert window_mean(losses, 200) == pytest.approx(sum(range(181, 200)) / 19)
    assert window_mean(losses[:150], 200) == math.inf
    assert window_mean([*losses[:185], math.nan, *losses[186:]], 200) == math.inf


def test_summary_uses_population_std_and_counts_diverged():
    def fake(losses):
        return SimpleNamespace(losses=losses, steps_per_second=1.0, wall_time=1.0)

    runs = [fake([1.0] * 20), fake([3.0] * 20), fake([math.inf] * 20)]
    s = summarize("x", runs, 20)
    assert (s.mean, s.std, s.diverged, s.runs) == (2.0, 1.0, 1, 3)


def test_same_seed_same_curve_and_lodo_seed_matters():
    a = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=1, steps=30))
    b = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=1, steps=30))
    c = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=2, steps=30))
    assert a.losses == b.losses
    assert a.losses != c.losses


def test_divergence_stops_early_and_is_marked():
    result = run_trial(TrialSpec("rosenbrock", "momentum", {"lr": 10.0}, seed=0, steps=200))
    assert result.diverged
    assert len(result.losses) < 200
    assert not math.isfinite(result.losses[-1])


def test_bad_step_count():
    with pytest.raises(ValueError, match="Invalid steps"):
        run_trial(TrialSpec("rosenbrock", "adam", {}, seed=0, steps=0))
