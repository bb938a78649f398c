"""The executor contract, run through LocalExecutor and RayExecutor (real local Ray, one per session)."""

from __future__ import annotations

import math
import os

import pytest

from tuner.executors import (
    Executor,
    LocalExecutor,
    RayExecutor,
    _socket_safe_temp_dir,
    make_executor,
    run_shard,
)
from tuner.trial import TrialSpec, run_trial

# Different optimizers, seeds and durations, so completion order differs from input order.
MIXED = [
    TrialSpec("rosenbrock", "lodo", {"lr": 0.2}, seed=0, steps=60),
    TrialSpec("rosenbrock", "adam", {"lr": 0.05}, seed=1, steps=5),
    TrialSpec("rosenbrock", "momentum", {"lr": 0.001}, seed=2, steps=40),
    TrialSpec("rosenbrock", "lodo", {"lr": 0.2}, seed=3, steps=20),
    TrialSpec("rosenbrock", "yogi", {"lr": 0.05}, seed=4, steps=30),
    TrialSpec("rosenbrock", "adam", {"lr": 0.05}, seed=5, steps=1),
]
UNKNOWN_TASK = TrialSpec("no-such-task", "adam", {}, seed=0, steps=5)
UNKNOWN_HYPERPARAMETER = TrialSpec("rosenbrock", "adam", {"momentum": 0.9}, seed=0, steps=5)
DIVERGING = TrialSpec("rosenbrock", "momentum", {"lr": 10.0}, seed=0, steps=200)  # inf by evaluation 6


def _raising_on_seed_one():
    """A trial function that raises for seed 1 (a closure: pickled by value, the test module is not
    importable in a Ray worker)."""

    def trial(spec):
        if spec.seed == 1:
            raise MemoryError("CUDA out of memory (simulated)")
        return run_trial(spec)

    return trial


@pytest.fixture(scope="module")
def reference():
    """In-process results of MIXED, the ground truth every executor must reproduce exactly."""
    return [run_trial(spec) for spec in MIXED]


@pytest.fixture(params=["local", "ray"])
def executor(request):
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    with make_executor(request.param) as ex:
        yield ex


class TestExecutorContract:
    def test_is_an_executor(self, executor):
        assert isinstance(executor, Executor)

    def test_results_in_input_order_for_a_mixed_batch(self, executor, reference):
        results = executor.map(MIXED)
        assert [r.spec for r in results] == MIXED
        assert [len(r.losses) for r in results] == [s.steps for s in MIXED]
        assert all(r.error is None and not r.diverged for r in results)

    def test_progress_once_per_trial_with_its_index(self, executor):
        calls = []
        results = executor.map(MIXED, lambda index, result: calls.append((index, result)))
        assert sorted(index for index, _ in calls) == list(range(len(MIXED)))
        for index, result in calls:
            assert result.spec == MIXED[index]
            assert result.losses == results[index].losses

    def test_failing_trial_becomes_an_error_result(self, executor, reference):
        specs = [MIXED[1], UNKNOWN_TASK, UNKNOWN_HYPERPARAMETER, MIXED[3]]
        results = executor.map(specs)
        assert [r.spec for r in results] == specs
        for bad, needle in ((results[1], "Unknown task 'no-such-task'"), (results[2], "'momentum'")):
            assert bad.status == "error" and not bad.diverged and bad.losses == [] and bad.metrics == {}
            assert bad.error.startswith("ValueError: ") and needle in bad.error
        assert results[0].losses == reference[1].losses and results[0].error is None
        assert results[3].losses == reference[3].losses and results[3].error is None

    def test_an_exception_is_an_error_and_a_non_finite_loss_a_divergence(self, executor):
        ok, diverged, error = executor.map([MIXED[1], DIVERGING, UNKNOWN_TASK])
        assert (ok.status, ok.diverged, ok.error) == ("ok", False, None)
        assert (diverged.status, diverged.diverged, diverged.error) == ("diverged", True, None)
        assert not math.isfinite(diverged.losses[-1]) and len(diverged.losses) < DIVERGING.steps
        assert (error.status, error.diverged) == ("error", False)
        assert "Unknown task 'no-such-task'" in error.error

    def test_deterministic_and_equal_to_in_process_results(self, executor, reference):
        first, second = executor.map(MIXED), executor.map(MIXED)
        assert [r.losses for r in first] == [r.losses for r in second] == [r.losses for r in reference]
        assert [r.metrics for r in first] == [r.metrics for r in reference]

    def test_empty_batch(self, executor):
        calls = []
        assert executor.map([], lambda *a: calls.append(a)) == []
        assert calls == []


def _crash_first_attempt(marker):
    """A trial function whose first call anywhere kills its worker process (a closure: pickled by value)."""

    def trial(spec):
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os._exit(1)  # a dying worker, not an exception: a system failure for Ray
        return run_trial(spec)

    return trial


class TestRay:
    # the tests that kill workers come last: their replacements start cold (torch import)

    def test_shards_give_the_same_results(self, ray_session, reference):
        calls = []
        with RayExecutor(trials_per_task=4) as ex:
            results = ex.map(MIXED, lambda i, r: calls.append(i))
        assert sorted(calls) == list(range(len(MIXED)))
        assert [r.spec for r in results] == MIXED
        assert [r.losses for r in results] == [r.losses for r in reference]

    def test_a_trial_function_raising_in_the_worker_is_an_error(self, ray_session):
        with RayExecutor(trial_fn=_raising_on_seed_one()) as ex:
            good, bad = ex.map([MIXED[0], MIXED[1]])
        assert good.status == "ok", good.error
        assert (bad.status, bad.diverged, bad.error) == (
            "error",
            False,
            "MemoryError: CUDA out of memory (simulated)",
        )

    def test_close_leaves_a_ray_it_did_not_start(self, ray_session):
        RayExecutor().close()
        assert ray_session.is_initialized()
        assert ray_session.get(ray_session.put(1)) == 1

    def test_killed_worker_is_retried_and_result_is_unchanged(self, ray_session, tmp_path, reference):
        marker = tmp_path / "attempted"
        specs = MIXED[:2]
        calls = []
        with RayExecutor(trial_fn=_crash_first_attempt(str(marker)), max_retries=2) as ex:
            results = ex.map(specs, lambda i, r: calls.append(i))
        assert marker.exists()  # the first attempt ran and died
        assert sorted(calls) == [0, 1]
        assert [r.error for r in results] == [None, None]
        assert [r.losses for r in results] == [r.losses for r in reference[:2]]

    def test_no_retries_left_gives_error_results_not_a_crash(self, ray_session, tmp_path):
        marker = tmp_path / "attempted"
        with RayExecutor(trial_fn=_crash_first_attempt(str(marker)), max_retries=0, trials_per_task=2) as ex:
            results = ex.map(MIXED[1:3])
        assert all(r.status == "error" and not r.diverged for r in results)
        assert all(r.losses == [] and "max_retries=0" in r.error for r in results)
        assert "WorkerCrashedError" in results[0].error, results[0].error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_cpus_per_trial": -1}, r"Invalid num_cpus_per_trial: -1 \(allowed: a number >= 0"),
        ({"num_cpus_per_trial": 1.5}, "Invalid num_cpus_per_trial: 1.5"),
        ({"num_gpus_per_trial": -0.25}, "Invalid num_gpus_per_trial: -0.25"),
        ({"num_gpus_per_trial": float("nan")}, "Invalid num_gpus_per_trial: nan"),
        ({"max_retries": -1}, r"Invalid max_retries: -1 \(allowed: an integer >= 0\)"),
        ({"trials_per_task": 0}, r"Invalid trials_per_task: 0 \(allowed: an integer >= 1\)"),
        ({"trials_per_task": 2.0}, "Invalid trials_per_task: 2.0"),
        ({"num_cpus": 0}, "Invalid num_cpus: 0"),
        ({"address": ""}, "Invalid address: ''"),
    ],
)
def test_ray_executor_rejects_bad_arguments_before_touching_ray(options, message):
    with pytest.raises(ValueError, match=message):
        RayExecutor(**options)


def test_make_executor():
    with pytest.raises(ValueError, match=r"Invalid executor kind: 'dask' \(allowed: local \| ray\)"):
        make_executor("dask")
    # a command line may pass its Ray flags unchanged when they are unset or at their defaults
    assert isinstance(make_executor("local", address=None, num_cpus_per_trial=1), LocalExecutor)
    with pytest.raises(ValueError, match="Invalid option num_gpus_per_trial for the local executor: 1"):
        make_executor("local", num_gpus_per_trial=1)


def test_local_executor_takes_a_trial_function():
    def fake(spec):
        if spec.seed == 1:
            raise RuntimeError("boom")
        return run_trial(spec)

    good, bad = LocalExecutor(trial_fn=fake).map([MIXED[5], MIXED[1]])
    assert good.error is None and bad.error == "RuntimeError: boom"
    assert (good.status, bad.status, bad.diverged) == ("ok", "error", False)


def test_run_shard_turns_an_exception_into_an_error_and_goes_on():
    bad, diverged, good = run_shard([MIXED[1], DIVERGING, MIXED[5]], _raising_on_seed_one())
    assert (bad.status, bad.diverged, bad.losses, bad.metrics) == ("error", False, [], {})
    assert bad.error == "MemoryError: CUDA out of memory (simulated)" and bad.wall_time >= 0
    assert (diverged.status, good.status) == ("diverged", "ok")
    assert good.losses == run_trial(MIXED[5]).losses


def test_long_temp_dir_is_reached_through_a_short_symlink(tmp_path):
    short, holder = _socket_safe_temp_dir("/tmp")
    assert (short, holder) == ("/tmp", None)
    long_dir = tmp_path / ("run-" + "x" * 80) / "ray"
    link, holder = _socket_safe_temp_dir(long_dir)
    try:
        assert len(link) <= 40 and os.path.realpath(link) == str(long_dir.resolve())
        assert long_dir.is_dir()
    finally:
        os.unlink(link)
        os.rmdir(holder)


class _FakeRay:
    """Stands in for ``ray.init`` / ``ray.shutdown`` to check what RayExecutor asks of Ray."""

    def __init__(self, monkeypatch, error=None):
        import ray

        self.init_kwargs, self.shutdowns, self.error = None, 0, error
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", self.init)
        monkeypatch.setattr(ray, "shutdown", self.shutdown)

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        if self.error:
            raise self.error

    def shutdown(self):
        self.shutdowns += 1


def test_starts_a_local_ray_in_temp_dir_and_shuts_it_down(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    fake = _FakeRay(monkeypatch)
    long_dir = tmp_path / ("run-" + "x" * 60) / "ray"
    ex = RayExecutor(temp_dir=long_dir, num_cpus=2)
    kwargs = fake.init_kwargs
    assert kwargs["num_cpus"] == 2 and kwargs["include_dashboard"] is False
    assert os.path.realpath(kwargs["_temp_dir"]) == str(long_dir.resolve())
    assert "address" not in kwargs and os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    ex.close()
    ex.close()
    assert fake.shutdowns == 1 and not os.path.exists(kwargs["_temp_dir"])


@pytest.mark.parametrize(("mode", "hint"), [(None, "set RAY_AUTH_MODE=token"), ("token", "is the cluster's")])
def test_refused_connection_says_how_to_authenticate(monkeypatch, mode, hint):
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    fake = _FakeRay(monkeypatch, ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6380"))
    with pytest.raises(ConnectionError, match=f"at 10.0.0.1:6380; .*{hint}"):
        RayExecutor(address="10.0.0.1:6380")
    assert fake.init_kwargs["address"] == "10.0.0.1:6380"
