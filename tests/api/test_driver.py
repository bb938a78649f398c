"""The driver's evaluation job reads what it re-runs from the store: the values and the task
options of the job it names (``from_job``), halved for final runs where the task's schedule says.
And what a killed driver leaves behind is cleaned up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lodo
from api.driver import Driver
from api.launchers import kill_ray_leftovers
from api.schemas import EvaluateRequest
from api.settings import Settings
from api.store import JobStore, migrate

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
    request = EvaluateRequest.model_validate(body)
    job, _ = store.create_job(
        kind="evaluate",
        spec=request.model_dump(mode="json"),
        task=request.task,
        optimizer=request.optimizers[0],
        strategy=None,
        launcher="queue",
        run_root=tmp_path / "runs",
    )
    return Driver(store, job, Settings(artifact_dir=tmp_path))


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


def test_from_job_reuses_the_tuned_values_and_the_batch_size_asha_chose(sqlite_store, tmp_path):
    source = _tuned_job(sqlite_store, tmp_path, ASHA_DOCUMENT)
    driver = _evaluation_driver(
        sqlite_store,
        tmp_path,
        task="digits-mlp",
        optimizers=["adam", "sgd"],
        from_job=source,
        tuned="defaults",
    )
    assert driver.evaluation_entries() == {
        "adam": (ASHA_DOCUMENT["hyperparameters"], f"job {source}"),
        "sgd": (lodo.get("sgd").defaults, "defaults"),
    }
    assert driver.evaluation_task_options() == {"batch_size": 400}
    given = _evaluation_driver(
        sqlite_store,
        tmp_path,
        task="digits-mlp",
        optimizers=["adam"],
        from_job=source,
        task_options={"batch_size": 50},
    )
    assert given.evaluation_task_options() == {"batch_size": 50}  # the request's own options win
    other_task = _evaluation_driver(
        sqlite_store, tmp_path, task="uci-energy", optimizers=["adam"], from_job=source
    )
    assert other_task.evaluation_task_options() == {}


def test_table6_values_are_halved_for_image_generation(sqlite_store, tmp_path):
    driver = _evaluation_driver(
        sqlite_store, tmp_path, task="mnist-autoregression", optimizers=["adam", "lodo"]
    )
    entries = driver.evaluation_entries()
    assert entries["adam"] == (
        {"lr": 0.0009554 / 2, "beta1": 0.9323, "beta2": 0.99505},
        "paper Table 6 (halved)",
    )
    assert entries["lodo"][0]["lr"] == 0.08459 / 2
    given = _evaluation_driver(
        sqlite_store,
        tmp_path,
        task="mnist-autoregression",
        optimizers=["adam"],
        hyperparameters={"adam": {"lr": 0.1}},
    )
    assert given.evaluation_entries()["adam"] == ({"lr": 0.1, "beta1": 0.9, "beta2": 0.999}, "given")


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
