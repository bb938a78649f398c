"""Supervised drivers against real servers and real processes: a driver killed (SIGKILL, as the
OOM killer does), terminated (SIGTERM) or stopped (SIGSTOP, its heartbeat goes quiet) resumes as
the next attempt from the store to the uninterrupted result; a job that keeps losing its driver
fails with every attempt's reason; two API processes on one store run each job once; a cancelled
job retried resumes from its stored generations; errors are one line; symlinks are no artifacts."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from api.launchers import QueueOnlyLauncher
from api.models import utcnow
from api.schemas import TuneRequest
from api.services import Conflict, JobService
from api.settings import Settings
from api.store import JobStore, public_error
from tests.api.conftest import Server, wait_for
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext, Runtime

# per trial and long enough (~0.3 s a generation) that a driver frozen after its first
# generation is mid-job: vectorized at step_scale 0.5 a quiet machine ran all six in the moment
# between seeing generation 1 and the SIGSTOP
SPEC = {
    "task": "rosenbrock",
    "optimizer": "adam",
    "generations": 6,
    "population": 4,
    "step_scale": 2.0,
    "vectorize": "off",
    "evaluate": False,
}
MISSING_DATA = {  # no MNIST in the server's data directory: every trial raises
    "task": "mnist-autoregression",
    "optimizer": "adam",
    "generations": 1,
    "population": 2,
    "step_scale": 0.001,
    "evaluate": False,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the single-server tests: a short heartbeat timeout (3 s), two attempts."""
    root = tmp_path_factory.mktemp("supervision")
    started = Server(
        root / "artifacts",
        heartbeat_interval="0.5",
        heartbeat_timeout="3",
        max_attempts="2",
        max_concurrent_jobs="3",
        data_dir=str(root / "no-data"),
    ).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """SPEC straight through the tuner, uninterrupted: its document and generation files."""
    root = tmp_path_factory.mktemp("reference")
    job = TuneRequest.model_validate({**SPEC, "evaluate": False})
    document = run_tune_job(job, JobContext(RunDir(root), Runtime("local")))["hyperparameters"]
    fitnesses = [
        [p["fitness"] for p in read_json(RunDir(root).generation_path(g))["population"]]
        for g in range(SPEC["generations"])
    ]
    return {"document": document, "fitnesses": fitnesses}


def _store(server: Server) -> JobStore:
    return JobStore(f"sqlite:///{server.artifact_dir / 'lodotune.db'}")


def _attempts(server: Server, job_id: str) -> list[dict]:
    store = _store(server)
    try:
        return store.get(job_id).attempts or []
    finally:
        store.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _reaped(pid: int, timeout: float = 5) -> bool:
    """Whether ``pid`` stops being a zombie (its parent, the server, waited on it) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True  # reaped, its pid already reused
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _freeze_mid_job(client, job_ids: list[str], attempt: int = 1, generation: int = 1) -> dict[str, int]:
    """SIGSTOP each job's driver the moment its ``attempt`` runs with ``generation`` finished
    generations (the job is then certainly mid-way); returns job id → driver pid."""
    frozen: dict[str, int] = {}
    deadline = time.monotonic() + 90
    while len(frozen) < len(job_ids):
        for job_id in job_ids:
            if job_id in frozen:
                continue
            job = client.get(f"/jobs/{job_id}").json()
            ready = job["attempt"] == attempt and (job["driver"] or "").startswith("pid ")
            if job["status"] == "running" and ready and job["progress"]["generation"] >= generation:
                pid = int(job["driver"].split()[1])
                os.kill(pid, signal.SIGSTOP)
                frozen[job_id] = pid
                job = client.get(f"/jobs/{job_id}").json()
                assert job["status"] == "running" and job["progress"]["generation"] < SPEC["generations"], job
            assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"not all of {job_ids} reached generation {generation}"
        time.sleep(0.02)
    return frozen


def _assert_uninterrupted_result(client, job_id: str, reference: dict) -> None:
    document = client.get(f"/jobs/{job_id}/hyperparameters").json()
    assert document["hyperparameters"] == reference["document"]["hyperparameters"]
    assert document["normalized_mean"] == reference["document"]["normalized_mean"]
    generations = client.get(f"/jobs/{job_id}/generations").json()
    assert [[p["fitness"] for p in g["record"]["population"]] for g in generations] == reference["fitnesses"]


def test_killed_terminated_and_stopped_drivers_resume_to_the_uninterrupted_result(server, reference):
    with server.client() as client:
        jobs = {name: client.post("/tune", json=SPEC).json()["id"] for name in ("kill", "term", "stop")}
        pids = _freeze_mid_job(client, list(jobs.values()))
        os.kill(pids[jobs["kill"]], signal.SIGKILL)
        os.kill(pids[jobs["term"]], signal.SIGTERM)
        os.kill(pids[jobs["term"]], signal.SIGCONT)  # it handles SIGTERM now
        # jobs["stop"] stays stopped: only its silent heartbeat tells
        for name, job_id in jobs.items():
            job = wait_for(client, job_id, timeout=90)
            assert (job["status"], job["attempt"], job["error"]) == ("succeeded", 2, None), (name, job)
            _assert_uninterrupted_result(client, job_id, reference)
            assert not _alive(pids[job_id]), name  # the stopped one was killed, the others reaped
            (lost,) = _attempts(server, job_id)
            assert lost["attempt"] == 1 and lost["charged"] is True
            log = (server.artifact_dir / "jobs" / job_id / "driver-2.log").read_text()
            assert "resuming from" in log and "stored generation" in log
    assert "SIGKILL" in _attempts(server, jobs["kill"])[0]["reason"]
    assert "SIGTERM" in _attempts(server, jobs["term"])[0]["reason"]
    stopped = _attempts(server, jobs["stop"])[0]["reason"]
    assert "no heartbeat" in stopped and "killed" in stopped


def test_a_job_that_loses_its_driver_max_attempts_times_fails_with_each_reason(server):
    with server.client() as client:
        job_id = client.post("/tune", json={**SPEC, "seed": 3}).json()["id"]
        for attempt in (1, 2):
            (pid,) = _freeze_mid_job(client, [job_id], attempt=attempt, generation=attempt - 1).values()
            os.kill(pid, signal.SIGKILL)
        job = wait_for(client, job_id, timeout=60)
    assert job["status"] == "failed" and job["attempt"] == 2
    error = job["error"]
    assert "\n" not in error and error.startswith("Lost its driver 2 times (LODOTUNE_MAX_ATTEMPTS=2)")
    assert "attempt 1: driver killed by SIGKILL" in error and "attempt 2: driver killed by SIGKILL" in error
    assert [r["attempt"] for r in _attempts(server, job_id)] == [1, 2]


def test_retry_of_a_cancelled_job_resumes_from_its_stored_generations(server, reference):
    with server.client() as client:
        job_id = client.post("/tune", json=SPEC).json()["id"]
        (pid,) = _freeze_mid_job(client, [job_id]).values()
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        os.kill(pid, signal.SIGCONT)  # it stops at its next unit of work
        job = wait_for(client, job_id, timeout=30)
        assert job["status"] == "cancelled" and job["attempt"] == 1
        kept = len(client.get(f"/jobs/{job_id}/generations").json())
        assert 1 <= kept < SPEC["generations"]

        store = _store(server)
        try:
            service = JobService(store, QueueOnlyLauncher(store, Settings()), Settings())
            retried = service.retry(job_id)  # the server's launcher picks the queued job up
            assert (retried.status, retried.attempt, retried.cancel_requested) == ("queued", 1, False)
            with pytest.raises(Conflict, match="only a failed or cancelled job"):
                service.retry(job_id)  # queued (or running by now)
            job = wait_for(client, job_id, timeout=60)
            assert (job["status"], job["attempt"], job["error"]) == ("succeeded", 2, None), job
            with pytest.raises(Conflict, match="is succeeded"):
                service.retry(job_id)
        finally:
            store.close()
        _assert_uninterrupted_result(client, job_id, reference)
    log = (server.artifact_dir / "jobs" / job_id / "driver-2.log").read_text()
    assert f"resuming from {kept} stored generation(s)" in log


def test_a_jobs_own_error_is_one_line_not_retried_and_symlinks_are_no_artifacts(server, tmp_path):
    with server.client() as client:
        job_id = client.post("/tune", json=MISSING_DATA).json()["id"]
        job = wait_for(client, job_id, timeout=60)
        assert job["status"] == "failed" and job["attempt"] == 1  # the driver's own outcome
        error = job["error"]
        assert "every trial of generation 0 raised an error" in error and "FileNotFoundError" in error
        assert "\n" not in error and "Traceback" not in error
        assert "/work/" not in error and "/tmp/" not in error and str(tmp_path) not in error
        assert _attempts(server, job_id) == []
        run_dir = server.artifact_dir / "jobs" / job_id
        assert "Traceback" in (run_dir / "driver-1.log").read_text()  # the whole story is in the log

        secret = tmp_path / "secret.json"
        secret.write_text(json.dumps({"token": "s3cret"}))
        (run_dir / "secret.json").symlink_to(secret)
        (run_dir / "config-link.json").symlink_to(run_dir / "config.json")  # inside, still a link
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "results.json").write_text("{}")
        (run_dir / "evaluation").symlink_to(outside, target_is_directory=True)
        artifacts = client.get(f"/jobs/{job_id}/artifacts").json()
        assert "driver-1.log" in artifacts
        assert not {"secret.json", "config-link.json", "results.json"} & set(artifacts)
        for name in ("secret.json", "config-link.json", "results.json"):
            assert client.get(f"/jobs/{job_id}/artifacts/{name}").status_code == 404, name


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_api_processes_on_one_store_run_each_job_once(serve, tmp_path, request, backend):
    settings = {"max_concurrent_jobs": "2"}
    if backend == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_url")
    artifacts = tmp_path / "artifacts"
    servers = [serve(artifacts, **settings), serve(artifacts, **settings)]
    clients = [s.client() for s in servers]
    try:
        ids = [
            clients[seed % 2].post("/tune", json={**SPEC, "generations": 3, "seed": seed}).json()["id"]
            for seed in range(3)
        ]
        for i, job_id in enumerate(ids):
            job = wait_for(clients[(i + 1) % 2], job_id, timeout=90)
            assert (job["status"], job["attempt"], job["error"]) == ("succeeded", 1, None), job
            assert _reaped(int(job["driver"].split()[1]))  # no zombie left for a later reconcile
            run_dir = artifacts / "jobs" / job_id
            assert sorted(p.name for p in run_dir.glob("driver-*.log")) == ["driver-1.log"]
            assert (run_dir / "driver-1.log").read_text().count(" attempt 1 pid ") == 1  # one driver started
    finally:
        for client in clients:
            client.close()
    for s in servers:
        s.stop()
        log = (artifacts.parent / f"server-{s.port}.log").read_text()
        assert "resuming as attempt" not in log and "superseded" not in log, log


def test_the_job_of_an_api_process_killed_on_this_host_resumes_on_the_other_at_once(
    serve, tmp_path, reference
):
    artifacts = tmp_path / "artifacts"
    first = serve(artifacts, lease_ttl="600")  # the takeover may not wait for the lease to expire
    with first.client() as client:
        job_id = client.post("/tune", json=SPEC).json()["id"]
        _freeze_mid_job(client, [job_id])  # mid-way under the first API process
    second = serve(artifacts, lease_ttl="600")
    first.kill()  # its (stopped) driver dies with it: PR_SET_PDEATHSIG sends SIGKILL
    with second.client() as client:
        job = wait_for(client, job_id, timeout=60)
        assert (job["status"], job["attempt"], job["error"]) == ("succeeded", 2, None), job
        _assert_uninterrupted_result(client, job_id, reference)
    (lost,) = _attempts(second, job_id)
    assert lost["reason"] == "the API process running its driver stopped" and lost["charged"] is False


# the store's part, on SQLite and PostgreSQL -------------------------------------------------------


def _queued(store: JobStore) -> str:
    job, _ = store.create_job(
        kind="tune",
        spec={"task": "rosenbrock"},
        task="rosenbrock",
        optimizer="adam",
        strategy="ga",
        launcher="inprocess",
        run_root=Path("/tmp/runs"),
    )
    return job.id


def test_one_compare_and_set_gives_a_job_to_one_owner_until_its_lease_expires(store):
    job_id = _queued(store)
    start = {"status": "running", "attempt": 1}
    results: list[tuple[str, bool]] = []

    def launch(owner: str) -> None:
        won = store.claim(job_id, owner, 60, when_status="queued", when_attempt=0, **start)
        results.append((owner, won))

    threads = [threading.Thread(target=launch, args=(f"host:{i}:0",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [owner for owner, won in results if won]
    assert len(winners) == 1
    job = store.get(job_id)
    assert (job.status, job.attempt, job.lease_owner) == ("running", 1, winners[0])

    other = "elsewhere:1:0"
    requeue = {"status": "queued", "lease_owner": None}
    assert not store.claim(job_id, other, 60, when_status="running", when_attempt=1, **requeue)
    assert store.claim(job_id, other, 60, when_status="running", when_attempt=1, steal_from=winners[0])
    assert store.get(job_id).lease_owner == other  # taken over from an owner known dead
    store.update(job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert store.renew_leases(winners[0], 60) == 0  # not its lease any more
    assert store.claim(job_id, winners[0], 60, when_status="running", when_attempt=1)  # expired: free
    assert store.renew_leases(winners[0], 60) == 1
    assert not store.claim(job_id, winners[0], 60, when_status="running", when_attempt=2)  # wrong attempt


def test_heartbeat_finish_and_retry_follow_the_attempt(store):
    job_id = _queued(store)
    store.start_attempt(job_id, 1, "test")
    before = store.get(job_id).updated_at
    assert store.heartbeat(job_id, 1) and not store.heartbeat(job_id, 2)
    job = store.get(job_id)
    assert job.heartbeat_at is not None and job.updated_at == before  # no progress event for a beat
    assert not store.finish(job_id, "succeeded", attempt=2)  # a replaced driver settles nothing
    assert store.retry(job_id) is None  # running
    assert store.finish(job_id, "failed", error="ValueError: bad\n  at /srv/lodotune/x.py:3", attempt=1)
    failed = store.get(job_id)
    assert failed.error == "ValueError: bad at …/x.py:3"
    assert not store.heartbeat(job_id, 1)
    retried = store.retry(job_id)
    assert (retried.status, retried.attempt, retried.error, retried.finished_at) == ("queued", 1, None, None)
    assert retried.attempts == [{**retried.attempts[0], "attempt": 1, "retry": True}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FileNotFoundError: expected /data/mnist/train-images. Set it",
            "FileNotFoundError: expected …/train-images. Set it",
        ),
        (
            'Traceback (most recent call last):\n  File "/work/main/api/x.py"',
            'Traceback (most recent call last): File "…/x.py"',
        ),
        (
            "Ray refused http://ray-head:8265/api/jobs/ (401)",
            "Ray refused http://ray-head:8265/api/jobs/ (401)",
        ),
        ("no such file: a/b/c", "no such file: a/b/c"),
    ],
)
def test_public_error_is_one_line_without_server_paths(text, expected):
    assert public_error(text) == expected
