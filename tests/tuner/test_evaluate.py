"""The final evaluation keeps every finished run, so a killed evaluation resumes where it stopped."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tuner.evaluate import RunStore, evaluate
from tuner.executors import LocalExecutor
from tuner.summary import PAPER_RULE
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RaisingFor:
    """run_trial, except that every trial of ``optimizers`` raises as a lost GPU would."""

    def __init__(self, *optimizers: str) -> None:
        self.optimizers = optimizers

    def __call__(self, spec: TrialSpec):
        if spec.optimizer in self.optimizers:
            raise RuntimeError("CUDA out of memory")
        return run_trial(spec)


def test_an_optimizer_that_raises_counts_errors_not_divergence(tmp_path):
    entries = {**ENTRIES, "momentum": {"lr": 10.0, "momentum": 0.9}}  # diverges within 12 evaluations
    document = evaluate(
        "rosenbrock",
        entries,
        steps=12,
        seeds=3,
        executor=LocalExecutor(trial_fn=RaisingFor("adam")),
        out_dir=tmp_path,
    )
    adam, momentum = document["optimizers"]["adam"], document["optimizers"]["momentum"]
    assert (adam["errors"], adam["diverged"], adam["runs"], adam["mean"]) == (3, 0, 3, None)
    assert adam["steps_per_second"] is None and momentum["steps_per_second"] > 0
    assert adam["error"] == "RuntimeError: CUDA out of memory"
    assert [r["status"] for r in adam["per_run"]] == ["error"] * 3
    assert not any(r["diverged"] for r in adam["per_run"])
    assert (momentum["errors"], momentum["diverged"], momentum["error"]) == (0, 3, None)
    assert [r["status"] for r in momentum["per_run"]] == ["diverged"] * 3
    assert json.loads((tmp_path / "results.json").read_text())["optimizers"]["adam"]["errors"] == 3
    table = (tmp_path / "results.md").read_text()
    assert "| diverged | errors |" in table
    assert "| adam | error | 0/3 | 3/3 | – |" in table
    assert "| momentum | diverged | 3/3 | 0/3 |" in table
    assert "* adam: RuntimeError: CUDA out of memory" in table
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not list((tmp_path / "runs").glob("adam__*"))  # errors are run again next time


def test_curves_are_written_when_no_run_has_a_loss(tmp_path):
    executor = LocalExecutor(trial_fn=RaisingFor("adam", "momentum"))
    document = evaluate("rosenbrock", ENTRIES, steps=12, seeds=2, executor=executor, out_dir=tmp_path)
    assert [e["errors"] for e in document["optimizers"].values()] == [2, 2]
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("steps", "window", "paper"),
    [
        (1, [1, 1], False),
        (10, [10, 10], False),
        (11, [10, 10], True),
        (20, [19, 19], True),
        (30, [28, 29], True),
    ],
)
def test_short_runs_are_scored_on_a_stated_window(tmp_path, steps, window, paper):
    document = _evaluate(tmp_path, CountingTrials(), steps=steps, seeds=2)
    assert document["window"] == window
    fallback = (
        "last evaluation (the paper's window, evaluations strictly inside (0.9·M, M), "
        f"is empty for M = {steps})"
    )
    assert document["window_rule"] == (PAPER_RULE if paper else fallback)
    curves = np.load(tmp_path / "curves.npz")
    first, last = window
    for name, entry in document["optimizers"].items():
        assert entry["errors"] == 0 and entry["diverged"] == 0 and entry["mean"] is not None
        for run in entry["per_run"]:
            losses = curves[f"{name}__{run['seed']}"]
            assert len(losses) == steps
            assert run["window_mean"] == pytest.approx(sum(losses[first - 1 : last]) / (last - first + 1))
    table = (tmp_path / "results.md").read_text()
    assert (f"Window: {fallback}." in table) is not paper
    assert f"loss, evals {first}–{last} (mean ± std)" in table


def test_bad_step_count_is_refused_before_any_run(tmp_path):
    trials = CountingTrials()
    with pytest.raises(ValueError, match=r"Invalid steps: 0 \(allowed: an integer >= 1\)"):
        _evaluate(tmp_path, trials, steps=0)
    assert trials.ran == []


def test_value_sources_default_to_the_rows_and_show_where_they_differ(tmp_path):
    document = _evaluate(
        tmp_path,
        CountingTrials(),
        seeds=1,
        sources={"adam": "paper Table 6"},
        value_sources={"adam": {"lr": "paper Table 6 (halved)"}},
    )
    adam, momentum = document["optimizers"]["adam"], document["optimizers"]["momentum"]
    assert adam["source"] == "paper Table 6"
    assert adam["value_sources"] == {
        "lr": "paper Table 6 (halved)",
        "beta1": "paper Table 6",
        "beta2": "paper Table 6",
    }
    assert momentum["value_sources"] == {"lr": "given", "momentum": "given"}
    table = (tmp_path / "results.md").read_text()
    assert "| paper Table 6 | lr=0.01 (paper Table 6 (halved)), beta1=0.9, beta2=0.999 |" in table
    assert "| given | lr=0.001, momentum=0.9 |" in table


@pytest.mark.parametrize(
    ("value_sources", "message"),
    [
        ({"sgd": {"lr": "tuned"}}, r"Invalid value_sources optimizer: 'sgd' \(allowed: adam, momentum\)"),
        (
            {"adam": {"momentum": "tuned"}},
            r"Invalid value_sources hyperparameter of adam: 'momentum' \(allowed: lr, beta1, beta2\)",
        ),
    ],
)
def test_value_sources_must_name_given_values(tmp_path, value_sources, message):
    trials = CountingTrials()
    with pytest.raises(ValueError, match=message):
        _evaluate(tmp_path, trials, value_sources=value_sources)
    assert trials.ran == []


def test_a_run_kept_before_status_existed_loads_with_its_status(tmp_path):
    store = RunStore(tmp_path)
    for seed, lr, status in ((1, 0.01, "ok"), (2, 1e6, "ok"), (3, 10.0, "diverged")):
        optimizer = "momentum" if status == "diverged" else "adam"
        spec = TrialSpec("rosenbrock", optimizer, {"lr": lr}, seed=seed, steps=12)
        result = run_trial(spec)
        assert result.status == status
        # the record as RunStore wrote it before TrialResult had a status
        old = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("spec", "losses")}
        np.save(tmp_path / f"{optimizer}__{seed}.npy", np.asarray(result.losses, dtype=float))
        (tmp_path / f"{optimizer}__{seed}.json").write_text(
            json.dumps({"spec": RunStore._key(spec), "result": old}, allow_nan=True)
        )
        kept = store.load(spec)
        assert kept is not None and kept.status == status and kept.diverged is result.diverged
        assert kept.losses == pytest.approx(result.losses, nan_ok=True)
        store.save(kept)  # written again, now with its status beside the fields it follows from
        assert json.loads((tmp_path / f"{optimizer}__{seed}.json").read_text())["result"]["status"] == status
        assert store.load(spec).status == status
