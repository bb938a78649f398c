"""The service's own Ray (LODOTUNE_SHARED_RAY, issue 13 item 9): the in-process launcher starts one
local Ray with the server and every driver joins it instead of starting its own; it is gone, temp
dir and all, once the server stops. A job says "starting" from the moment it is launched."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from api.schemas import TuneRequest
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
    return serve(tmp_path / "artifacts", executor="ray", max_concurrent_jobs="2")


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
