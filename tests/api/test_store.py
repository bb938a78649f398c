"""The job store on SQLite and on PostgreSQL: schema, idempotency, paging, progress, results."""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from api.models import Base
from api.store import IdempotencyConflict, JobStore, migrate


def _job(store: JobStore, *, task="rosenbrock", optimizer="adam", key=None, spec=None):
    return store.create_job(
        kind="tune",
        spec=spec or {"task": task},
        task=task,
        optimizer=optimizer,
        strategy="ga",
        launcher="inprocess",
        run_root=Path("/tmp/runs"),
        idempotency=key,
    )


def _generation(g: int, fitnesses: list[float | None]) -> dict:
    return {
        "generation": g,
        "population": [{"index": i, "fitness": f} for i, f in enumerate(fitnesses)],
        "elite_mean": {"values": {"lr": 0.1}},
        "state": {"generation": g + 1, "mean": {"lr": -2.3}},
    }


def test_migrations_create_exactly_the_models_schema(store):
    migrate(store.url)  # a second upgrade is a no-op
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"


def test_sqlite_store_runs_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'store.db'}"
    migrate(url)
    store = JobStore(url)
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_create_get_and_run_dir(store):
    job, created = _job(store)
    assert created and job.status == "queued" and job.attempt == 0 and len(job.id) == 32
    assert job.run_dir == f"/tmp/runs/{job.id}"
    fetched = store.get(job.id)
    assert fetched.spec == {"task": "rosenbrock"} and fetched.created_at.tzinfo is not None
    assert store.get("0" * 32) is None


def test_idempotency_key_same_body_same_job_other_body_conflict(store):
    first, created = _job(store, key=("key-1", "a" * 64))
    again, created_again = _job(store, key=("key-1", "a" * 64))
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        _job(store, key=("key-1", "b" * 64))
    other, created_other = _job(store, key=("key-2", "a" * 64))
    assert created_other and other.id != first.id


def test_idempotency_key_race_creates_one_job(store):
    ids, errors = [], []

    def submit():
        try:
            ids.append(_job(store, key=("race", "f" * 64))[0].id)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1
    assert len(store.list(limit=100)[0]) == 1


def test_list_pages_newest_first_with_filters(store):
    made = [_job(store, task="rosenbrock" if i % 2 else "noisy-quadratic-bowl")[0].id for i in range(7)]
    page, cursor = store.list(limit=3)
    assert [j.id for j in page] == made[::-1][:3] and cursor is not None
    page2, cursor2 = store.list(limit=3, cursor=cursor)
    page3, cursor3 = store.list(limit=3, cursor=cursor2)
    assert [j.id for j in page + page2 + page3] == made[::-1] and cursor3 is None
    rosenbrock, _ = store.list(task="rosenbrock", limit=10)
    assert [j.id for j in rosenbrock] == made[1::2][::-1]
    store.finish(made[0], "failed", error="boom")
    failed, _ = store.list(status="failed")
    assert [j.id for j in failed] == [made[0]]


def test_terminal_status_is_final(store):
    job, _ = _job(store)
    assert store.start_attempt(job.id, 1, driver="pid 1")
    store.request_cancel(job.id)
    assert store.finish(job.id, "cancelled")
    # a late driver write cannot turn a cancelled job into a succeeded or running one
    assert not store.finish(job.id, "succeeded")
    assert not store.start_attempt(job.id, 2, driver="pid 2")
    final = store.get(job.id)
    assert final.status == "cancelled" and final.cancel_requested and final.finished_at is not None


def test_generations_progress_and_duplicates(store):
    job, _ = _job(store)
    store.record_generation(job.id, _generation(0, [0.5, None, 0.3]))
    store.record_generation(job.id, _generation(1, [None, None]))  # all diverged: best stays
    store.record_generation(job.id, _generation(0, [9.0]))  # a resumed driver re-sends: kept first
    rows = store.generations(job.id)
    assert [r.generation for r in rows] == [0, 1]
    assert rows[0].best_fitness == 0.3 and rows[1].best_fitness is None
    assert rows[0].record["population"][2]["fitness"] == 0.3
    current = store.get(job.id)
    assert current.generation == 2 and current.best_fitness == 0.3


def test_generations_of_studies_are_kept_apart_in_the_order_they_ran(store):
    job, _ = _job(store)
    for study in range(2):
        for g in range(2):
            store.record_generation(job.id, {**_generation(g, [float(study), 2.0]), "study": study})
    store.record_generation(job.id, {**_generation(1, [9.0]), "study": 1})  # re-sent: kept first
    rows = store.generations(job.id)
    assert [(r.study, r.generation) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r.record["study"] for r in rows] == [0, 0, 1, 1] and rows[3].best_fitness == 1.0
    assert store.get(job.id).best_fitness == 0.0


def test_results_are_upserted_and_json_safe(store):
    job, _ = _job(store)
    store.save_result(job.id, "results", {"mean": math.inf, "curve": [1.0, math.nan], "n": 3})
    assert store.result(job.id, "results") == {"mean": None, "curve": [1.0, None], "n": 3}
    store.save_result(job.id, "results", {"n": 4})
    assert store.result(job.id, "results") == {"n": 4}
    assert store.result(job.id, "hyperparameters") is None
    with pytest.raises(
        ValueError,
        match=re.escape("Invalid result name: 'plots' (allowed: hyperparameters | results | report)"),
    ):
        store.save_result(job.id, "plots", {})
