"""The service's own Ray (LODOTUNE_SHARED_RAY, issue 13 item 9): the in-process launcher starts one
local Ray with the server and every driver joins it instead of starting its own; it is gone, temp
dir and all, once the server stops. A job says "starting" from the moment it is launched. While
no job runs, a standby driver waits with torch imported and the Ray's workers started: a job at
an idle service runs on it, and the next standby takes its place."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from api.launchers import InProcessLauncher
from api.schemas import TuneRequest
from api.settings import Settings
from api.store import JobStore, migrate
from tests.api.conftest import Server, wait_for
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir
from tuner.runtime import JobContext, Runtime

SPEC = {
    "task": "rosenbrock",
    "optimizer": "adam",
    "generations": 2,
    "population": 4,
    "step_scale": 0.5,
    "evaluate": False,
}


def _processes_mentioning(text: str) -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text.encode() in command and state not in ("Z", "X"):
                found[int(entry.name)] = command
    return found


def _service_ray_dir(server: Server) -> str:
    log = (server.artifact_dir.parent / f"server-{server.port}.log").read_text()
    match = re.search(r"the service's Ray runs at (\S+) \((\S+)\)", log)
    assert match, log
    return match.group(2)


@pytest.fixture
def ray_server(serve, tmp_path):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    return serve(tmp_path / "artifacts", executor="ray", max_concurrent_jobs="2", standby_driver="true")


def test_jobs_share_the_services_one_ray_which_goes_with_the_server(ray_server, tmp_path):
    temp_dir = _service_ray_dir(ray_server)
    assert len(temp_dir) <= 40 and Path(temp_dir).is_dir()
    with ray_server.client() as client:
        ids = [client.post("/tune", json={**SPEC, "seed": seed}).json()["id"] for seed in (0, 1)]
        jobs = [wait_for(client, job_id, timeout=300) for job_id in ids]
        assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
        tuned = [client.get(f"/jobs/{job_id}/hyperparameters").json() for job_id in ids]
    addresses = set()
    for job in jobs:
        log = (ray_server.artifact_dir / "jobs" / job["id"] / "driver-1.log").read_text()
        addresses |= set(re.findall(r"joining Ray at (\S+)", log))
    assert len(addresses) == 1, addresses  # both drivers joined the one Ray
    raylets = [p for p, c in _processes_mentioning(temp_dir).items() if c.split(b"\0")[0].endswith(b"raylet")]
    assert len(raylets) == 1
    for seed, document in zip((0, 1), tuned, strict=True):
        root = tmp_path / f"reference-{seed}"
        request = TuneRequest.model_validate({**SPEC, "seed": seed})
        reference = run_tune_job(request, JobContext(RunDir(root), Runtime("local")))["hyperparameters"]
        assert document["hyperparameters"] == reference["hyperparameters"]
    ray_server.stop()
    assert _processes_mentioning(temp_dir) == {}
    assert not Path(temp_dir).exists()
    assert not list((ray_server.artifact_dir / "service-ray").glob("*.json"))


def test_a_job_says_starting_before_its_first_trial(ray_server):
    with ray_server.client() as client:
        job_id = client.post("/tune", json=SPEC).json()["id"]
        seen = []
        while True:
            job = client.get(f"/jobs/{job_id}").json()
            progress = job.get("progress") or {}
            seen.append((job["status"], progress.get("phase"), progress.get("trials_done")))
            if (
                job["status"] in ("succeeded", "failed", "cancelled")
                or (progress.get("trials_done") or 0) >= 1
            ):
                break
            time.sleep(0.05)
        assert any(phase == "starting" for _, phase, _ in seen), seen
        assert wait_for(client, job_id, timeout=300)["status"] == "succeeded"


def _ready_standbys(server: Server, count: int, timeout: float = 120, min_workers: int = 1) -> list[int]:
    """The pids of the first ``count`` standby drivers that said they are ready (the server's log),
    each with at least ``min_workers`` Ray workers started."""
    log = server.artifact_dir.parent / f"server-{server.port}.log"
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(r"standby (\d+) ready \((\d+) Ray workers started\)", log.read_text())
        if len(found) >= count:
            assert all(int(workers) >= min_workers for _, workers in found), found
            return [int(pid) for pid, _ in found[:count]]
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_a_job_at_an_idle_service_runs_on_the_standby_driver_then_another_stands_by(ray_server, tmp_path):
    (standby,) = _ready_standbys(ray_server, 1)
    with ray_server.client() as client:
        job_id = client.post("/tune", json={**SPEC, "seed": 2}).json()["id"]
        job = wait_for(client, job_id, timeout=300)
        assert job["status"] == "succeeded", job
        assert int(job["driver"].split()[1]) == standby
        document = client.get(f"/jobs/{job_id}/hyperparameters").json()
    log = (ray_server.artifact_dir / "jobs" / job_id / "driver-1.log").read_text()
    assert f"job {job_id} attempt 1 succeeded" in log  # its output went to the job's log
    request = TuneRequest.model_validate({**SPEC, "seed": 2})
    reference = run_tune_job(request, JobContext(RunDir(tmp_path / "ref"), Runtime("local")))
    assert document["hyperparameters"] == reference["hyperparameters"]["hyperparameters"]
    _, replacement = _ready_standbys(ray_server, 2)
    assert replacement != standby and standby not in _processes_mentioning("api.driver")


def test_a_job_queued_behind_another_runs_on_a_standby_started_while_it_waited(serve, tmp_path):
    server = serve(tmp_path / "artifacts", max_concurrent_jobs="1", standby_driver="true")
    (first,) = _ready_standbys(server, 1, min_workers=0)  # executor local: no Ray
    ahead = {**SPEC, "optimizer": "lodo", "generations": 4, "population": 16, "step_scale": 1.0}
    with server.client() as client:
        ahead_id = client.post("/tune", json=ahead).json()["id"]
        queued_id = client.post("/tune", json={**SPEC, "seed": 3}).json()["id"]
        jobs = [wait_for(client, job_id, timeout=300) for job_id in (ahead_id, queued_id)]
    # the second standby started while the first job ran on the first and the second waited: no
    # standby is started while the queued job runs, so without it that job would start cold
    _, second = _ready_standbys(server, 2, min_workers=0)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
    assert [int(job["driver"].split()[1]) for job in jobs] == [first, second]
    log = (server.artifact_dir / "jobs" / queued_id / "driver-1.log").read_text()
    assert f"job {queued_id} attempt 1 succeeded" in log


def test_a_standby_started_in_another_environment_is_stopped_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("LODOTUNE_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("LODOTUNE_EXECUTOR", "local")
    settings = Settings()
    migrate(settings.resolved_database_url)
    store = JobStore(settings.resolved_database_url)
    launcher = InProcessLauncher(store, settings)
    try:
        launcher.start()
        standby = launcher._standby
        assert standby is not None and standby.process.poll() is None
        log = tmp_path / "driver.log"
        monkeypatch.setenv("LODOTUNE_SOMETHING_NEW", "1")  # a driver started now sees another environment
        with launcher._lock:  # not the reconcile thread meanwhile
            assert launcher._take_standby(launcher._driver_env(), "job", 1, log) is None
            assert standby.process.wait(30) == -signal.SIGKILL and not log.exists()
            launcher._keep_standby()
            assert launcher._standby is not None and launcher._standby is not standby
            replacement = launcher._standby.process
    finally:
        launcher.close()
        store.close()
    assert replacement.wait(30) is not None  # closing the launcher stopped its standby
