"""The strategy contract, run over the registry: every registered strategy, through the one job
runner, tunes and evaluates a small job, speaks the one event vocabulary, refuses unknown options by
name, and describes itself. A new strategy joins these tests by its registry line and one small
job below (a test fails until it has one)."""

from __future__ import annotations

import pytest

from tuner import events as ev
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext, Runtime
from tuner.specs import TuneJob
from tuner.strategies import STRATEGIES

# the smallest meaningful job of each strategy on digits-mlp (steps count as each strategy says)
SMALL_JOBS = {
    "ga": {"optimizer": "sgd", "step_scale": 0.02, "strategy_options": {"generations": 2, "population": 4}},
    "asha": {
        "optimizer": "sgd",
        "strategy_options": {
            "num_samples": 4,
            "max_t": 8,
            "grace_period": 2,
            "report_every": 2,
            "budget": "updates",
        },
    },
    "onepass": {"strategy_options": {"steps": 20, "initialisations": 2}},
}
COMMON_KEYS = {"strategy", "task", "optimizer", "hyperparameters", "transforms", "job_seed", "task_options"}
COMMON_KEYS |= {"versions"}


def test_every_registered_strategy_has_a_small_job_here():
    assert set(SMALL_JOBS) == set(STRATEGIES)


def _small_job(name: str, **fields) -> TuneJob:
    return TuneJob(task="digits-mlp", strategy=name, seeds=2, baselines=[], **{**SMALL_JOBS[name], **fields})


@pytest.fixture(scope="module", params=list(STRATEGIES))
def finished(request, ray_session, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(name)
    events: list[ev.Event] = []
    documents = run_tune_job(_small_job(name), JobContext(RunDir(root), Runtime("ray"), emit=events.append))
    return name, root, documents, events


def test_a_strategy_tunes_and_evaluates_through_the_runner(finished):
    name, root, documents, _ = finished
    tuned, results = documents["hyperparameters"], documents["results"]
    assert set(tuned) >= COMMON_KEYS and tuned["strategy"] == name and tuned["task"] == "digits-mlp"
    assert read_json(root / "hyperparameters.json") == tuned
    assert read_json(root / "evaluation" / "results.json") == results
    assert len(results["seeds"]) == 2
    summary = STRATEGIES[name].summary(tuned)
    assert summary.rows and all(len(row) == len(summary.columns) for row in summary.rows)
    assert all(t.rows for t in STRATEGIES[name].results_summary(results))
    if name == "ga":  # the job's vectorize (auto) reached the Ray executor: one shard per CPU
        records = RunDir(root).finished_generations()
        assert [r["execution"] for r in records] == [{"vectorized": 4, "alone": 0, "shard_sizes": [2, 2]}] * 2
        runs = [r for entry in results["optimizers"].values() for r in entry["per_run"]]
        assert runs and all(r["execution"]["vectorized"] for r in runs)


def test_a_strategy_speaks_the_one_event_vocabulary(finished):
    _, _, documents, events = finished
    kinds = [type(e) for e in events]
    assert kinds[0] is ev.PhaseStarted and events[0].phase == "tuning"
    assert kinds[-1] is ev.JobFinished and events[-1].documents == documents
    ready = [e for e in events if isinstance(e, ev.DocumentReady)]
    assert [e.name for e in ready] == ["hyperparameters", "results"]
    assert [e.document for e in ready] == [documents["hyperparameters"], documents["results"]]
    evaluation = kinds.index(ev.PhaseStarted, 1)
    assert events[evaluation].phase == "evaluation"
    runs = [e for e in events[evaluation:] if isinstance(e, ev.EvaluationRunFinished)]
    assert len(runs) == events[evaluation].total and {r.status for r in runs} <= {"ok", "diverged"}
    tuning = events[1:evaluation]
    assert any(isinstance(e, ev.TrialFinished | ev.Checkpoint) for e in tuning)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_unknown_options_are_refused_naming_the_allowed_ones(name):
    options = STRATEGIES[name].Options
    with pytest.raises(ValueError, match=rf"Invalid {name} option 'no_such_option' \(allowed: "):
        _small_job(name, strategy_options={"no_such_option": 1})
    allowed = [k for k in options.model_fields if k != "strategy"]
    assert allowed, f"{name} has no options"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_options_are_strictly_typed(name):
    options = STRATEGIES[name].Options
    integer = next(k for k, f in options.model_fields.items() if f.annotation in (int, int | None))
    with pytest.raises(ValueError, match=integer):
        _small_job(name, strategy_options={integer: "3"})  # a string is not coerced to a number


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_strategy_describes_itself(name):
    record = STRATEGIES[name].describe()
    assert record["name"] == name and record["summary"] and record["optimizers"]
    assert record["options"]["properties"]["strategy"]["const"] == name  # the union's tag


def test_a_job_whose_every_trial_raises_fails_with_the_error(tmp_path, monkeypatch):
    def broken(spec):
        raise RuntimeError("the data directory is gone")

    from tuner.executors import LocalExecutor

    events: list[ev.Event] = []
    ctx = JobContext(RunDir(tmp_path), emit=events.append, executor_override=LocalExecutor(trial_fn=broken))
    with pytest.raises(
        RuntimeError, match=r"every trial of generation 0 raised an error.*data directory is gone"
    ):
        run_tune_job(_small_job("ga"), ctx)
    statuses = {e.status for e in events if isinstance(e, ev.TrialFinished)}
    assert statuses == {"error"}  # counted as errors, never as divergences
    assert isinstance(events[-1], ev.JobFailed) and "data directory is gone" in events[-1].error
    assert not (tmp_path / "hyperparameters.json").exists()


def test_a_trial_that_raises_is_an_error_in_its_generation_not_a_divergence(tmp_path):
    from tuner.executors import LocalExecutor
    from tuner.trial import run_trial

    def flaky(spec):
        if spec.seed % 2:
            raise MemoryError("CUDA out of memory (simulated)")
        return run_trial(spec)

    ctx = JobContext(RunDir(tmp_path), executor_override=LocalExecutor(trial_fn=flaky))
    job = _small_job("ga", evaluate=False)
    run_tune_job(job, ctx)
    for record in RunDir(tmp_path).finished_generations():
        errored = [p for p in record["population"] if p["status"] == "error"]
        assert record["errors"] == len(errored) == sum(p["seed"] % 2 for p in record["population"])
        assert all(not p["diverged"] and p["fitness"] is None for p in errored)
        assert all("out of memory" in p["error"] for p in errored)
        assert not set(record["elite"]) & {p["index"] for p in errored}
