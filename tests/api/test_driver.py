"""The driver's evaluation job reads what it re-runs from the store: the values and the task
options of the job it names (``from_job``); given values run as given (the halving of Table 6
values for image generation is tested on the plan, tests/tuner/test_final.py: no MNIST here).
And what a killed driver leaves behind is cleaned up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lodo
from api.driver import Driver, StoreSink
from api.launchers import kill_ray_leftovers
from api.schemas import EvaluateRequest, TuneRequest
from api.settings import Settings
from api.store import JobStore, json_safe, migrate
from tuner import events as ev
from tuner.rundir import RunDir
from tuner.strategies import AllTrialsFailed

ASHA_DOCUMENT = {
    "strategy": "asha",
    "task": "digits-mlp",
    "optimizer": "adam",
    "hyperparameters": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999},
    "task_options": {"batch_size": 400},
}


@pytest.fixture
def sqlite_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    store = JobStore(url)
    yield store
    store.close()


def _evaluation_driver(store: JobStore, tmp_path, **body) -> Driver:
    request = EvaluateRequest.model_validate({"seeds": 1, "steps": 3, **body})
    job, _ = store.create_job(
        kind="evaluate",
        spec=request.model_dump(mode="json"),
        task=request.task,
        optimizer=request.optimizers[0],
        strategy=None,
        launcher="queue",
        run_root=tmp_path / "runs",
    )
    store.update(job.id, status="running")
    return Driver(store, store.get(job.id), Settings(artifact_dir=tmp_path, executor="local"))


def _tuned_job(store: JobStore, tmp_path, document: dict) -> str:
    job, _ = store.create_job(
        kind="tune",
        spec={"task": document["task"]},
        task=document["task"],
        optimizer=document["optimizer"],
        strategy=document.get("strategy", "ga"),
        launcher="queue",
        run_root=tmp_path / "runs",
    )
    store.save_result(job.id, "hyperparameters", document)
    return job.id


def _stored_results(driver: Driver) -> dict:
    driver.run()
    return driver.store.result(driver.job.id, "results")


def test_from_job_reuses_the_tuned_values_and_the_batch_size_asha_chose(sqlite_store, tmp_path):
    source = _tuned_job(sqlite_store, tmp_path, ASHA_DOCUMENT)
    body = {"task": "digits-mlp", "optimizers": ["adam", "sgd"], "from_job": source, "tuned": "defaults"}
    results = _stored_results(_evaluation_driver(sqlite_store, tmp_path, **body))
    adam, sgd = results["optimizers"]["adam"], results["optimizers"]["sgd"]
    assert (adam["hyperparameters"], adam["source"]) == (ASHA_DOCUMENT["hyperparameters"], f"job {source}")
    assert (sgd["hyperparameters"], sgd["source"]) == (lodo.get("sgd").defaults, "defaults")
    assert results["task_options"] == {"batch_size": 400}
    given = {
        "task": "digits-mlp",
        "optimizers": ["adam"],
        "from_job": source,
        "task_options": {"batch_size": 50},
    }
    assert _stored_results(_evaluation_driver(sqlite_store, tmp_path, **given))["task_options"] == {
        "batch_size": 50
    }  # the request's own options win
    other = {"task": "rosenbrock", "optimizers": ["adam"], "from_job": source}
    assert _stored_results(_evaluation_driver(sqlite_store, tmp_path, **other))["task_options"] == {}


def test_given_values_run_as_given_and_the_rest_at_their_defaults(sqlite_store, tmp_path):
    body = {"task": "digits-mlp", "optimizers": ["adam"], "hyperparameters": {"adam": {"lr": 0.1}}}
    adam = _stored_results(_evaluation_driver(sqlite_store, tmp_path, **body))["optimizers"]["adam"]
    assert (adam["hyperparameters"], adam["source"]) == ({"lr": 0.1, "beta1": 0.9, "beta2": 0.999}, "given")
    assert adam["value_sources"] == {"lr": "given", "beta1": "default", "beta2": "default"}


def _session_members(session: int) -> list[str]:
    """argv[0] of each live process in ``session``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":  # a killed process is gone, zombie or not
                members.append((stat.parent / "cmdline").read_bytes().split(b"\0")[0].decode())
        except (OSError, ValueError, IndexError):
            continue
    return members


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_dead_drivers_ray_leftovers_are_killed_and_nothing_else(tmp_path):
    # A stand-in driver leading its own session (as the in-process launcher starts them), with a
    # child named as Ray names its agents and one that is not Ray's.
    script = "exec -a ray::DashboardAgent sleep 60 & exec -a innocent sleep 60 & wait"
    driver = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while sorted(_session_members(driver.pid)) != ["bash", "innocent", "ray::DashboardAgent"]:
            assert time.monotonic() < deadline, _session_members(driver.pid)
            time.sleep(0.05)
        assert kill_ray_leftovers(driver.pid) == 0  # the driver is alive: its session is not ours to clean
        driver.kill()
        driver.wait()
        assert kill_ray_leftovers(driver.pid) == 1
        deadline = time.monotonic() + 10
        while "ray::DashboardAgent" in _session_members(driver.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _session_members(driver.pid) == ["innocent"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


class _Killed(BaseException):
    """Stands for a SIGKILL right after the driver handled an event (nothing after it runs)."""


def _tune_driver(store: JobStore, tmp_path, attempt: int, job_id: str | None = None, **fields) -> Driver:
    if job_id is None:
        request = TuneRequest(
            task="rosenbrock",
            optimizer="adam",
            generations=3,
            population=4,
            step_scale=0.1,
            seeds=1,
            **fields,
        )
        job, _ = store.create_job(
            kind="tune",
            spec=request.model_dump(mode="json"),
            task="rosenbrock",
            optimizer="adam",
            strategy="ga",
            launcher="queue",
            run_root=tmp_path / "runs",
        )
        job_id = job.id
    store.start_attempt(job_id, attempt, f"test:{attempt}")
    return Driver(store, store.get(job_id), Settings(artifact_dir=tmp_path, executor="local"))


def test_the_store_holds_a_generation_the_moment_it_finishes_and_a_restart_reads_only_the_store(
    sqlite_store, tmp_path, monkeypatch
):
    checkpoints = []

    class KilledAfterTheFirstGeneration(StoreSink):
        def __call__(self, event):
            super().__call__(event)
            if isinstance(event, ev.Checkpoint):
                checkpoints.append(event.record)
                raise _Killed

    monkeypatch.setattr("api.driver.StoreSink", KilledAfterTheFirstGeneration)
    first = _tune_driver(sqlite_store, tmp_path, attempt=1)
    with pytest.raises(_Killed):
        first.run()
    stored = sqlite_store.generations(first.job.id)
    assert [row.generation for row in stored] == [0]
    assert stored[0].record == json_safe(checkpoints[0])  # in the store before anything else ran
    assert not RunDir(first.job.run_dir).generation_path(0).exists()  # the file comes after

    # the run directory is damaged; the store alone carries the job on
    run_dir = RunDir(first.job.run_dir)
    run_dir.config_path.write_text("{not json")
    run_dir.generation_path(0).parent.mkdir(parents=True, exist_ok=True)
    run_dir.generation_path(0).write_text('{"generation": 0, "popul')  # truncated mid-write
    monkeypatch.setattr("api.driver.StoreSink", StoreSink)
    documents = _tune_driver(sqlite_store, tmp_path, attempt=2, job_id=first.job.id).run()
    assert [row.generation for row in sqlite_store.generations(first.job.id)] == [0, 1, 2]
    assert sqlite_store.generations(first.job.id)[0].record == stored[0].record

    reference_root = tmp_path / "reference"
    reference = _tune_driver(sqlite_store, reference_root, attempt=1).run()
    assert documents["hyperparameters"]["hyperparameters"] == reference["hyperparameters"]["hyperparameters"]
    assert (
        sqlite_store.result(first.job.id, "results")["optimizers"]["adam"]["mean"]
        == (reference["results"]["optimizers"]["adam"]["mean"])
    )


def test_a_job_of_studies_stores_each_studys_generations_and_a_restart_resumes_from_the_store(
    sqlite_store, tmp_path, monkeypatch
):
    progress = []  # (study, studies, generation) in the store as each study's generation started

    class KilledInTheSecondStudy(StoreSink):
        def __call__(self, event):
            super().__call__(event)
            if isinstance(event, ev.GenerationStarted):
                job = self.store.get(self.job_id)
                progress.append((job.study, job.studies, job.generation))
            if isinstance(event, ev.Checkpoint) and event.record["study"] == 1:
                raise _Killed

    monkeypatch.setattr("api.driver.StoreSink", KilledInTheSecondStudy)
    first = _tune_driver(sqlite_store, tmp_path, attempt=1, studies=3)
    with pytest.raises(_Killed):
        first.run()
    stored = sqlite_store.generations(first.job.id)
    assert [(row.study, row.generation) for row in stored] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert [row.record["study"] for row in stored] == [row.study for row in stored]
    assert progress == [(0, 3, 0), (0, 3, 1), (0, 3, 2), (1, 3, 0)]

    # the studies' files are gone; the store alone carries the job on
    shutil.rmtree(RunDir(first.job.run_dir).root / "studies")
    monkeypatch.setattr("api.driver.StoreSink", StoreSink)
    documents = _tune_driver(sqlite_store, tmp_path, attempt=2, job_id=first.job.id).run()
    rows = sqlite_store.generations(first.job.id)
    assert [(row.study, row.generation) for row in rows] == [(k, g) for k in range(3) for g in range(3)]
    assert rows[3].record == stored[3].record  # study 1 went on from its stored generation
    job = sqlite_store.get(first.job.id)
    assert (job.study, job.studies, job.generation) == (None, 3, 3)  # after the last study
    assert (
        sqlite_store.result(first.job.id, "hyperparameters")["study"] == documents["studies"]["median_study"]
    )

    reference = _tune_driver(sqlite_store, tmp_path / "reference", attempt=1, studies=3).run()
    assert documents["hyperparameters"] == reference["hyperparameters"]
    assert documents["studies"]["per_study"] == reference["studies"]["per_study"]


def test_an_all_error_job_fails_with_the_error_through_the_driver(sqlite_store, tmp_path, monkeypatch):
    # no MNIST files in the data directory: every trial raises FileNotFoundError building its task
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "no-data"))
    request = TuneRequest(
        task="mnist-autoregression", optimizer="adam", generations=1, population=2, step_scale=0.01
    )
    job, _ = sqlite_store.create_job(
        kind="tune",
        spec=request.model_dump(mode="json"),
        task=request.task,
        optimizer="adam",
        strategy="ga",
        launcher="queue",
        run_root=tmp_path / "runs",
    )
    sqlite_store.start_attempt(job.id, 1, "test:1")
    driver = Driver(sqlite_store, sqlite_store.get(job.id), Settings(artifact_dir=tmp_path, executor="local"))
    with pytest.raises(AllTrialsFailed, match="FileNotFoundError: MNIST train images not found"):
        driver.run()
    assert sqlite_store.generations(job.id) == []  # nothing was learnt, nothing stored as if it were
    assert sqlite_store.result(job.id, "hyperparameters") is None
