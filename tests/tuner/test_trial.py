"""run_trial and the evaluation window against hand-computed values."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import ClassVar

import pytest
import torch

import lodo
import tasks
from lodo.registry import OptimizerSpec
from tasks.base import OutputBatch
from tuner.executors import failed_result
from tuner.summary import PAPER_RULE, Window, summarize, window, window_mean
from tuner.trial import TrialResult, TrialSpec, build_optimizer, run_trial

ROSENBROCK = TrialSpec("rosenbrock", "adam", {"lr": 0.01}, seed=0, steps=20)


def test_window_is_strictly_inside_point_nine_m_and_m():
    losses = [float(i) for i in range(1, 201)]  # loss at evaluation i is i
    assert window_mean(losses, 200) == pytest.approx(sum(range(181, 200)) / 19)
    assert window_mean(losses[:150], 200) == math.inf
    assert window_mean([*losses[:185], math.nan, *losses[186:]], 200) == math.inf


def test_window_is_the_papers_where_it_is_not_empty():
    assert window(200) == Window(181, 199, PAPER_RULE)
    assert window(11) == Window(10, 10, PAPER_RULE)  # 9.9 < 10 < 11
    assert window(20) == Window(19, 19, PAPER_RULE)
    for total in range(11, 3001):  # exactly the integers strictly inside (0.9·M, M)
        w = window(total)
        assert w.first - 1 <= Fraction(9, 10) * total < w.first <= w.last == total - 1


@pytest.mark.parametrize("total", [1, 2, 9, 10])
def test_an_empty_window_falls_back_to_the_last_evaluation_and_says_so(total):
    w = window(total)
    assert (w.first, w.last) == (total, total)
    assert w.rule == (
        "last evaluation (the paper's window, evaluations strictly inside (0.9·M, M), "
        f"is empty for M = {total})"
    )
    losses = [float(i) for i in range(1, total + 1)]
    assert window_mean(losses, total) == total
    assert window_mean(losses[:-1], total) == math.inf  # stopped before its last evaluation


def test_window_mean_of_a_hand_made_curve():
    losses = [float(i) for i in range(1, 21)]
    assert window_mean(losses, 20) == 19.0  # only evaluation 19 is strictly inside (18, 20)
    assert window_mean(losses[:11], 11) == 10.0
    assert window_mean([7.0], 1) == 7.0


@pytest.mark.parametrize("total", [0, -3, 2.5, True])
def test_window_of_a_bad_step_count(total):
    with pytest.raises(ValueError, match=r"Invalid steps: .* \(allowed: an integer >= 1\)"):
        window(total)


def _result(losses, *, diverged=False, error=None):
    return TrialResult(
        ROSENBROCK, losses, diverged, wall_time=1.0, steps_per_second=20.0, metrics={}, error=error
    )


def test_summary_over_ok_runs_with_divergence_and_errors_apart():
    runs = [
        _result([1.0] * 200),
        _result([3.0] * 200),
        _result([1.0, math.inf], diverged=True),
        failed_result(ROSENBROCK, "RuntimeError: CUDA out of memory", wall_time=0.5),
        # every loss finite, yet the sum over evaluations 181…199 overflows: an ok run whose
        # window mean is +inf
        _result([1e308] * 200),
    ]
    assert [r.status for r in runs] == ["ok", "ok", "diverged", "error", "ok"]
    s = summarize("x", runs, 200)
    assert (s.mean, s.std, s.runs, s.diverged, s.errors) == (2.0, 1.0, 5, 2, 1)
    assert s.steps_per_second == 20.0  # the error's time to its exception is no rate


def test_summary_of_runs_that_all_raised():
    s = summarize("x", [failed_result(ROSENBROCK, "OSError: no data")] * 3, 20)
    assert (s.mean, s.runs, s.diverged, s.errors) == (math.inf, 3, 0, 3)
    assert math.isnan(s.std) and math.isnan(s.steps_per_second)


def test_same_seed_same_curve_and_lodo_seed_matters():
    a = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=1, steps=30))
    b = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=1, steps=30))
    c = run_trial(TrialSpec("rosenbrock", "lodo", {"lr": 0.3}, seed=2, steps=30))
    assert a.losses == b.losses
    assert a.losses != c.losses


def test_divergence_stops_early_and_is_marked():
    result = run_trial(TrialSpec("rosenbrock", "momentum", {"lr": 10.0}, seed=0, steps=200))
    assert result.diverged and result.status == "diverged" and result.error is None
    assert len(result.losses) < 200
    assert not math.isfinite(result.losses[-1])


def test_status_is_derived_and_in_the_dict():
    ok = run_trial(ROSENBROCK)
    assert ok.status == "ok" and ok.to_dict()["status"] == "ok"
    assert _result([], diverged=True, error="lost worker").status == "error"  # an error wins
    failed = failed_result(ROSENBROCK, "ValueError: bad value")
    assert (failed.status, failed.diverged, failed.to_dict()["status"]) == ("error", False, "error")
    with pytest.raises(AttributeError):
        ok.status = "diverged"  # read-only: it follows error and diverged


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


def test_build_optimizer_applies_the_registry_options_and_the_trial_seed():
    task = tasks.build("rosenbrock", seed=0)
    lean = build_optimizer(task, "lodo", {}, seed=3, total_steps=10, options={"meta_dtype": "float32"})
    assert lean.meta_state["theta"].dtype == torch.float32
    default = build_optimizer(task, "lodo", {}, seed=3, total_steps=10)
    assert default.meta_state["theta"].dtype == torch.float64
    again = build_optimizer(task, "lodo", {}, seed=3, total_steps=10)
    other = build_optimizer(task, "lodo", {}, seed=4, total_steps=10)
    assert torch.equal(default.meta_state["theta"], again.meta_state["theta"])
    assert not torch.equal(default.meta_state["theta"], other.meta_state["theta"])
    with pytest.raises(ValueError, match=r"Invalid option 'meta_dtype' for adam \(allowed: none\)"):
        build_optimizer(task, "adam", {}, seed=0, total_steps=10, options={"meta_dtype": "float32"})


def test_metrics_sampled_during_training_leave_the_run_as_it_was():
    spec = TrialSpec("noisy-quadratic-bowl", "lodo", {"lr": 0.05}, seed=1, steps=250, task_options={"n": 12})
    plain = run_trial(spec)
    traced = run_trial(dataclasses.replace(spec, metric_every=100))
    assert traced.losses == plain.losses  # the probes have their own stream
    assert [t["evaluation"] for t in traced.metric_trace] == [100, 200]
    assert plain.metric_trace == []
    # the first sample is the end-of-run metrics of a 100-step run (the probes' first draw too)
    short = run_trial(dataclasses.replace(spec, steps=100))
    assert traced.metric_trace[0] == {"evaluation": 100, **short.metrics}
    assert 0 < traced.metric_trace[1]["hessian_error"] < traced.metric_trace[0]["hessian_error"] < 1


def test_a_step_of_two_evaluations_samples_once_per_multiple_it_passes():
    # L-BFGS spends two evaluations per step: counts 2, 4, …; every 3 is due at 4, 6, 10, 12, …
    spec = TrialSpec("rosenbrock", "lbfgs", lodo.get("lbfgs").defaults, seed=0, steps=13, metric_every=3)
    evaluations = [t["evaluation"] for t in run_trial(spec).metric_trace]
    assert evaluations == [4, 6, 10, 12]


@pytest.mark.parametrize("metric_every", [0, -1, 2.5, True])
def test_a_bad_metric_interval_is_refused_naming_it(metric_every):
    with pytest.raises(ValueError, match=r"Invalid metric_every: .* \(allowed: an integer >= 1"):
        run_trial(dataclasses.replace(ROSENBROCK, metric_every=metric_every))
