"""The driver's evaluation job reads what it re-runs from the store: the values and the task
options of the job it names (``from_job``), halved for final runs where the task's schedule says."""

from __future__ import annotations

import pytest

import lodo
from api.driver import Driver
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
