"""The final evaluation keeps every finished run, so a killed evaluation resumes where it stopped."""

from __future__ import annotations

import json

import pytest

from tuner.evaluate import RunStore, evaluate
from tuner.executors import LocalExecutor
from tuner.trial import TrialSpec, run_trial

ENTRIES = {"adam": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999}, "momentum": {"lr": 1e-3, "momentum": 0.9}}


class Killed(BaseException):
    """Stands for the driver being killed in the middle of the evaluation (a BaseException, like
    SystemExit on SIGTERM, so the executor does not turn it into the trial's error result)."""


class CountingTrials:
    """run_trial, counting the specs it ran; raises :class:`Killed` once ``kill_after`` have run."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.ran: list[tuple[str, int]] = []
        self.kill_after = kill_after

    def __call__(self, spec: TrialSpec):
        if self.kill_after is not None and len(self.ran) == self.kill_after:
            raise Killed
        self.ran.append((spec.optimizer, spec.seed))
        return run_trial(spec)


def _evaluate(out_dir, trials: CountingTrials, *, entries=ENTRIES, **overrides):
    options = {"steps": 12, "seeds": 3, "out_dir": out_dir, "job_seed": 5, **overrides}
    return evaluate("rosenbrock", entries, executor=LocalExecutor(trial_fn=trials), **options)


def _numbers(document):
    """The document without timings, which differ between runs of the same trial."""
    return {
        name: (entry["mean"], entry["std"], [run["curve"] for run in entry["per_run"]])
        for name, entry in document["optimizers"].items()
    }


def test_a_killed_evaluation_reruns_only_the_runs_it_had_not_finished(tmp_path):
    uninterrupted = _evaluate(tmp_path / "whole", CountingTrials())
    killed = CountingTrials(kill_after=4)
    with pytest.raises(Killed):
        _evaluate(tmp_path / "resumed", killed)
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = CountingTrials()
    seen = []
    document = _evaluate(tmp_path / "resumed", resumed, progress=lambda index, result: seen.append(index))
    assert len(resumed.ran) == 2 and not set(resumed.ran) & set(killed.ran)  # 6 runs, 4 kept
    assert sorted(seen) == list(range(6))  # kept runs are reported as finished too
    assert _numbers(document) == _numbers(uninterrupted)
    assert document["reused_runs"] == 4 and uninterrupted["reused_runs"] == 0


def test_a_finished_evaluation_run_again_runs_nothing(tmp_path):
    first = _evaluate(tmp_path, CountingTrials())
    again = CountingTrials()
    assert _numbers(_evaluate(tmp_path, again)) == _numbers(first)
    assert again.ran == []


def test_kept_runs_of_other_settings_are_not_reused(tmp_path):
    _evaluate(tmp_path, CountingTrials())
    longer = CountingTrials()
    _evaluate(tmp_path, longer, steps=14)
    assert len(longer.ran) == 6
    other_values = CountingTrials()
    _evaluate(tmp_path, other_values, entries={"adam": {"lr": 0.02, "beta1": 0.9, "beta2": 0.999}})
    assert len(other_values.ran) == 3


def test_errors_are_not_kept_and_a_broken_record_is_run_again(tmp_path):
    store = RunStore(tmp_path)
    spec = TrialSpec("rosenbrock", "adam", ENTRIES["adam"], seed=1, steps=6)
    result = run_trial(spec)
    store.save(result)
    kept = store.load(spec)
    assert kept is not None and kept.losses == result.losses and kept.metrics == result.metrics
    (tmp_path / "adam__1.npy").write_bytes(b"not an array")
    assert store.load(spec) is None
    failed = run_trial(TrialSpec("rosenbrock", "adam", ENTRIES["adam"], seed=2, steps=6))
    failed.error = "worker lost"
    store.save(failed)
    assert not (tmp_path / "adam__2.json").exists()
    meta = json.loads((tmp_path / "adam__1.json").read_text())
    assert json.loads(meta["spec"])["seed"] == 1
