"""Event streams: a cap on open streams (503 beyond it, the slot given back when a stream closes),
a queued job's stream says so, and every event carries an id from which ``Last-Event-ID`` resumes."""

from __future__ import annotations

import json
import time

import pytest

from api.store import JobStore
from tests.api.conftest import Server

TUNE = {"task": "rosenbrock", "optimizer": "adam", "generations": 3, "population": 4, "step_scale": 0.1}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # queue launcher: nothing runs, the test writes the job's progress into the store itself
    running = Server(
        tmp_path_factory.mktemp("streams") / "artifacts", launcher="queue", max_event_streams="2"
    )
    running.start()
    yield running
    running.stop()


def _events(lines, count: int) -> list[tuple[str, str, dict]]:
    """The next ``count`` events of a stream's ``iter_lines()`` as (event, id, data). The caller
    holds the iterator: a dropped one closes the connection, and the stream with it."""
    out, event, event_id = [], None, None
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("id:"):
            event_id = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            out.append((event, event_id, json.loads(line.split(":", 1)[1])))
            if len(out) == count:
                return out
    return out


def _record(generation: int) -> dict:
    population = [{"fitness": 1.0 / (generation + 1 + i), "status": "ok"} for i in range(4)]
    return {"generation": generation, "population": population, "elite_mean": {"values": {"lr": 0.1}}}


def test_a_queued_job_says_so_and_streams_are_capped(server):
    with server.client() as client:
        job_id = client.post("/tune", json=TUNE).json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/events") as first:
            lines = first.iter_lines()
            ((event, event_id, data),) = _events(lines, 1)
            assert (event, event_id, data["status"]) == ("progress", "0", "queued")
            with client.stream("GET", f"/jobs/{job_id}/events") as second:
                assert second.status_code == 200
                refused = client.get(f"/jobs/{job_id}/events")
                assert refused.status_code == 503 and refused.headers["retry-after"]
                assert "2 event streams are open" in refused.json()["detail"]
        # both closed: their slots are given back once the server notices the disconnects
        deadline = time.monotonic() + 30
        while True:
            with client.stream("GET", f"/jobs/{job_id}/events") as again:
                if again.status_code == 200:
                    break
            assert again.status_code == 503 and time.monotonic() < deadline, "a slot was never given back"
            time.sleep(0.05)


def test_last_event_id_resumes_after_the_generations_already_delivered(server):
    with server.client() as client:
        job_id = client.post("/tune", json=TUNE).json()["id"]
        store = JobStore(f"sqlite:///{(server.artifact_dir / 'lodotune.db').resolve()}")
        try:
            store.update(job_id, status="running")
            for g in range(3):
                store.record_generation(job_id, _record(g))
            store.finish(job_id, "succeeded")
        finally:
            store.close()
        with client.stream("GET", f"/jobs/{job_id}/events") as whole:
            events = _events(whole.iter_lines(), 5)
        assert [(e, i) for e, i, _ in events] == [
            ("generation", "1"),
            ("generation", "2"),
            ("generation", "3"),
            ("progress", "3"),
            ("end", "3"),
        ]
        headers = {"Last-Event-ID": "2"}  # the client had generations 0 and 1
        with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as resumed:
            events = _events(resumed.iter_lines(), 3)
        event, event_id, data = events[0]
        assert (event, event_id, data["generation"]) == ("generation", "3", 2)
        assert [e for e, _, _ in events] == ["generation", "progress", "end"]
