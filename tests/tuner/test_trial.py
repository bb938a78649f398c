"""run_trial and the evaluation window against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

import lodo
from lodo.registry import OptimizerSpec
from tasks.base import OutputBatch
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


def test_same_batch_steps_count_both_evaluations_and_end_on_a_plain_one():
    # Rosenbrock is deterministic: a step's second evaluation (at the new point) equals the next
    # step's first, and an odd budget ends with a plain evaluation at the last point.
    result = run_trial(TrialSpec("rosenbrock", "sfn-series", {}, seed=0, steps=5))
    assert len(result.losses) == 5
    assert result.losses[1] == result.losses[2]
    assert result.losses[3] == result.losses[4] == pytest.approx(result.metrics["loss"])


class _Probe(torch.optim.Optimizer):
    """Evaluates its closure twice without moving and keeps what it saw."""

    seen: ClassVar[list] = []

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure, batch=None):
        first, second = float(closure().detach()), float(closure().detach())
        self.seen.append((first, second, batch))


def test_same_batch_closure_re_evaluates_the_task_batch(monkeypatch):
    class ProbeSpec(OptimizerSpec):
        def resolve(self):
            return _Probe

    spec = ProbeSpec("probe", "probe:Probe", "probe", (), evaluation="same-batch-outputs")
    monkeypatch.setitem(lodo.registry.OPTIMIZERS, "probe", spec)
    monkeypatch.setattr(_Probe, "seen", [])
    result = run_trial(TrialSpec("digits-mlp", "probe", {}, seed=0, steps=6))
    assert len(result.losses) == 6
    assert [(first, second) for first, second, _ in _Probe.seen] == [
        tuple(result.losses[i : i + 2]) for i in (0, 2, 4)
    ]
    assert all(first == second for first, second, _ in _Probe.seen)
    assert len({first for first, _, _ in _Probe.seen}) == 3  # a fresh minibatch per step
    batch = _Probe.seen[0][2]
    assert isinstance(batch, OutputBatch) and batch.loss == "cross-entropy" and len(batch.inputs) == 50
