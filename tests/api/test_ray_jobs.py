"""The ray-jobs launcher: against a real `ray start --head` cluster with token auth (as Ray 2.60
runs it), and its reconciliation rules against a scripted client."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.launchers import RayJobsLauncher
from api.schemas import TuneRequest
from api.settings import Settings
from api.store import JobStore, migrate
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir
from tuner.runtime import JobContext, Runtime

RAY_PORTS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "runtime-env-agent-port",
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node cluster started like production's head (`ray start --head`, token auth on),
    every port free-picked (others may run Ray here), stopped by killing only its processes."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray command line is not installed next to this Python")
    temp_dir = tempfile.mkdtemp(prefix="lt-rj-", dir="/tmp")
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "PATH": f"{ray_bin.parent}:{os.environ.get('PATH', '')}",  # jobs run `python` from here
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    ports = dict(zip(RAY_PORTS, _free_ports(len(RAY_PORTS)), strict=True))
    command = [
        str(ray_bin),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"address": address, "token": token}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids_mentioning(temp_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def cluster_store(tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_cluster["token"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = Settings(
        artifact_dir=tmp_path / "artifacts",
        launcher="ray-jobs",
        ray_address=ray_cluster["address"],
        driver_num_cpus=0.5,
    )
    migrate(settings.resolved_database_url)
    store = JobStore(settings.resolved_database_url)
    yield settings, store
    store.close()


def _create(store: JobStore, settings: Settings, request: TuneRequest):
    job, _ = store.create_job(
        kind="tune",
        spec=request.model_dump(mode="json"),
        task=request.task,
        optimizer=request.optimizer,
        strategy="ga",
        launcher="ray-jobs",
        run_root=settings.artifact_dir.resolve() / "jobs",
    )
    return job


def _reconcile_until(launcher, store, job_id, done, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launcher.reconcile()
        job = store.get(job_id)
        if done(job):
            return job
        time.sleep(0.5)
    raise AssertionError(f"timed out: {store.get(job_id).__dict__}")


def test_the_cluster_refuses_requests_without_the_token(ray_cluster):
    assert httpx.get(f"{ray_cluster['address']}/api/version").status_code == 401
    headers = {"Authorization": f"Bearer {ray_cluster['token']}"}
    assert httpx.get(f"{ray_cluster['address']}/api/version", headers=headers).json()["ray_version"]


def test_a_job_runs_on_the_cluster_once_with_the_in_process_result(cluster_store, tmp_path):
    settings, store = cluster_store
    request = TuneRequest(
        task="rosenbrock", optimizer="adam", generations=2, population=4, step_scale=0.2, seeds=2
    )
    job = _create(store, settings, request)
    launcher = RayJobsLauncher(store, settings)
    launcher.reconcile()
    launcher.reconcile()  # a second pass submits nothing new
    submission = RayJobsLauncher.submission_id(job.id, 1)
    with pytest.raises(RuntimeError, match="already exists"):  # Ray itself refuses a duplicate id
        launcher.client.submit_job(entrypoint="true", submission_id=submission)
    done = _reconcile_until(launcher, store, job.id, lambda j: j.status not in ("queued", "running"))
    assert done.status == "succeeded", done.error
    assert done.driver == submission and done.attempt == 1
    mine = [j for j in launcher.client.list_jobs() if (j.metadata or {}).get("lodotune_job") == job.id]
    assert len(mine) == 1
    ctx = JobContext(RunDir(tmp_path / "ref"), Runtime("local"))
    reference = run_tune_job(request.model_copy(update={"evaluate": False}), ctx)["hyperparameters"]
    assert store.result(job.id, "hyperparameters")["hyperparameters"] == reference["hyperparameters"]
    assert set(store.result(job.id, "results")["optimizers"]) == {"adam"}


def test_cancel_stops_the_ray_job_and_keeps_generations(cluster_store):
    settings, store = cluster_store
    request = TuneRequest(
        task="rosenbrock", optimizer="lodo", generations=50, population=4, step_scale=0.5, evaluate=False
    )
    job = _create(store, settings, request)
    launcher = RayJobsLauncher(store, settings)
    _reconcile_until(launcher, store, job.id, lambda j: j.generation >= 1)
    store.request_cancel(job.id)
    done = _reconcile_until(launcher, store, job.id, lambda j: j.status != "running", timeout=60)
    assert done.status == "cancelled"
    status = launcher.client.get_job_status(done.driver)
    assert str(status).rsplit(".", 1)[-1] in ("STOPPED", "SUCCEEDED")  # stopped, or quit on its own check
    assert 1 <= len(store.generations(job.id)) < 50


class ScriptedClient:
    """Answers like JobSubmissionClient, from a script."""

    def __init__(self, submit_errors=(), status="RUNNING", status_error=None):
        self.submit_errors = list(submit_errors)
        self.status, self.status_error = status, status_error
        self.submitted, self.stopped = [], []

    def submit_job(self, **kwargs):
        if self.submit_errors:
            raise RuntimeError(self.submit_errors.pop(0))
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_status(self, submission_id):
        if self.status_error:
            raise RuntimeError(self.status_error)
        return f"JobStatus.{self.status}"

    def stop_job(self, submission_id):
        self.stopped.append(submission_id)
        return True

    def get_job_logs(self, submission_id):
        return "line 1\nTraceback: boom\n"


@pytest.fixture
def local_store(tmp_path):
    settings = Settings(artifact_dir=tmp_path / "a", launcher="ray-jobs", ray_address="http://head:8265")
    migrate(settings.resolved_database_url)
    store = JobStore(settings.resolved_database_url)
    job = _create(store, settings, TuneRequest(task="rosenbrock", optimizer="adam"))
    return settings, store, job


def test_submission_retries_while_the_cluster_is_not_ready_and_fails_on_auth(local_store):
    settings, store, job = local_store
    client = ScriptedClient(submit_errors=["status code 500: No available agent to submit job"])
    launcher = RayJobsLauncher(store, settings, client=client)
    launcher.reconcile()
    waiting = store.get(job.id)
    assert waiting.status == "queued" and waiting.attempt == 0 and "retrying" in waiting.error
    launcher.reconcile()
    running = store.get(job.id)
    assert running.status == "running" and running.attempt == 1 and running.error is None
    assert client.submitted[0]["submission_id"] == f"lodotune-{job.id}-1"
    assert client.submitted[0]["entrypoint"] == f"python -m api.driver {job.id} --attempt 1"
    assert (
        client.submitted[0]["runtime_env"]["env_vars"]["LODOTUNE_DATABASE_URL"]
        == settings.resolved_database_url
    )

    other = _create(store, settings, TuneRequest(task="rosenbrock", optimizer="adam", seed=1))
    RayJobsLauncher(
        store, settings, client=ScriptedClient(submit_errors=["status code 401: Unauthorized"])
    ).reconcile()
    refused = store.get(other.id)
    assert refused.status == "failed" and "Ray refused the submission" in refused.error


@pytest.mark.parametrize(
    ("ray_status", "cancel", "status", "error"),
    [
        ("STOPPED", False, "failed", "stopped outside lodotune"),
        ("STOPPED", True, "cancelled", None),
        ("RUNNING", False, "running", None),
    ],
)
def test_reconcile_settles_what_ray_reports(local_store, ray_status, cancel, status, error):
    settings, store, job = local_store
    client = ScriptedClient(status=ray_status)
    launcher = RayJobsLauncher(store, settings, client=client)
    launcher.reconcile()  # submits
    if cancel:
        store.request_cancel(job.id)
    launcher.reconcile()
    settled = store.get(job.id)
    assert settled.status == status
    if error is None:
        assert settled.error is None
    else:
        assert error in settled.error


def test_a_ray_job_that_failed_without_an_outcome_is_a_lost_driver(local_store):
    # the driver reports a job's own failure itself; a Ray job that ended FAILED while the store
    # still says running lost its driver (a node gone, the OOM killer): the next attempt runs
    settings, store, job = local_store
    client = ScriptedClient(status="FAILED")
    launcher = RayJobsLauncher(store, settings, client=client)
    launcher.reconcile()  # submits
    launcher.reconcile()  # settles the FAILED attempt, submits the next
    again = store.get(job.id)
    assert again.status == "running" and again.attempt == 2
    assert "ended FAILED without reporting an outcome" in again.attempts[0]["reason"]
    last = Settings(**{**settings.model_dump(), "max_attempts": 1})
    other = _create(store, last, TuneRequest(task="rosenbrock", optimizer="adam", seed=1))
    launcher = RayJobsLauncher(store, last, client=ScriptedClient(status="FAILED"))
    launcher.reconcile()
    launcher.reconcile()
    failed = store.get(other.id)
    assert failed.status == "failed" and "ended FAILED" in failed.error and "\n" not in failed.error


def test_a_job_ray_forgot_is_resubmitted_as_the_next_attempt(local_store):
    settings, store, job = local_store
    client = ScriptedClient()
    launcher = RayJobsLauncher(store, settings, client=client)
    launcher.reconcile()
    client.status_error = "Job lodotune-x does not exist"
    launcher.reconcile()  # requeued, then submitted again in the same pass
    again = store.get(job.id)
    assert again.status == "running" and again.attempt == 2
    assert [s["submission_id"] for s in client.submitted] == [f"lodotune-{job.id}-1", f"lodotune-{job.id}-2"]


def test_cancel_of_a_running_ray_job_calls_stop(local_store):
    settings, store, job = local_store
    client = ScriptedClient()
    launcher = RayJobsLauncher(store, settings, client=client)
    launcher.reconcile()
    store.request_cancel(job.id)
    launcher.reconcile()
    assert client.stopped == [f"lodotune-{job.id}-1"]
    assert store.get(job.id).status == "running"  # until Ray reports the stop


def test_lodotune_submit_runs_the_cli_job_on_the_cluster(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_cluster["token"])
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "submit",
            "rosenbrock",
            "adam",
            "--ray-address",
            ray_cluster["address"],
            "--out",
            str(out),
            "--driver-num-cpus",
            "0.5",
            "--follow",
            "--tune-option",
            "--generations 1 --population 2 --step-scale 0.1 --seeds 1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.output
    document = json.loads((out / "hyperparameters.json").read_text())
    assert document["optimizer"] == "adam" and (out / "evaluation" / "results.json").exists()
    again = CliRunner().invoke(
        app, ["submit", "rosenbrock", "adam", "--ray-address", ray_cluster["address"], "--out", str(out)]
    )
    assert again.exit_code == 2, again.output  # the same run is not run twice
    assert "already exists" in again.output and "Traceback" not in again.output
