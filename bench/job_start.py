"""How long a new job shows nothing: from POST /tune (a small rosenbrock adam job, executor ray) to
the first progress event with ``trials_done >= 1`` on its event stream. Modes, a fresh server each,
REPEATS jobs one after another:

* ``standby, idle service`` (the default settings, a job arriving at an idle service): before each
  job, wait until the standby driver says it is ready (its line in the server's log);
* ``standby, back to back``: each job posted the moment the previous one ended, so its standby
  driver is still starting;
* ``standby, queued`` and ``no standby, queued``: each job posted while a longer one (AHEAD, ~10
  s) runs, timed from when it left the queue (its ``started_at``) to its first finished trial;
* ``no standby`` (LODOTUNE_STANDBY_DRIVER=false, the baseline): every driver imports torch and
  its Ray workers start after the POST;
* ``own Ray per driver`` (LODOTUNE_SHARED_RAY=false, no standby): each driver starts a Ray too.

    .venv/bin/python bench/job_start.py  # prints a table, writes bench/results/job_start.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.conftest import Server  # noqa: E402

REPEATS = 3
SPEC = {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4, "evaluate": False}
# the job a queued one waits behind
AHEAD = {"task": "rosenbrock", "optimizer": "lodo", "generations": 10, "population": 32, "evaluate": False}
BASELINE = "no standby"
STANDBY = {"shared_ray": "true", "standby_driver": "true"}
COLD = {"shared_ray": "true", "standby_driver": "false"}
# label: (server settings, how each job arrives: at an idle service with its standby ready,
# right after the previous job ended, or queued behind AHEAD)
MODES = {
    "standby, idle service": (STANDBY, "idle"),
    "standby, back to back": (STANDBY, "back to back"),
    "standby, queued": (STANDBY, "queued"),
    BASELINE: (COLD, "back to back"),
    "no standby, queued": (COLD, "queued"),
    "own Ray per driver": ({"shared_ray": "false", "standby_driver": "false"}, "back to back"),
}
READY = "lodotune driver: standby "


def wait_for_standby(server: Server, count: int, timeout: float = 120) -> None:
    """Until the server's log holds ``count`` standby-ready lines (one per standby started)."""
    log = server.artifact_dir.parent / f"server-{server.port}.log"
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(READY) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ready standby driver within {timeout} s: see {log}")
        time.sleep(0.1)


def first_trial_seconds(server: Server, seed: int, queued: bool = False) -> float:
    """From POST /tune (``queued``: from when the job left the queue behind AHEAD) to its first
    progress event with a finished trial."""
    with server.client() as client:
        ahead = None
        if queued:
            ahead = client.post("/tune", json={**AHEAD, "seed": seed}).raise_for_status().json()["id"]
        start = time.time()
        job_id = client.post("/tune", json={**SPEC, "seed": seed}).raise_for_status().json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/events", timeout=300) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = json.loads(line.removeprefix("data:"))
                progress = data.get("progress", data)
                if (progress.get("trials_done") or 0) >= 1 or (progress.get("generation") or 0) >= 1:
                    end = time.time()
                    break
                if data.get("status") in ("failed", "cancelled"):
                    raise RuntimeError(f"job {job_id} {data.get('status')}: {data}")
        for waited in (job_id, ahead):
            while waited and client.get(f"/jobs/{waited}").json()["status"] in ("queued", "running"):
                time.sleep(0.2)
        if queued:
            started = client.get(f"/jobs/{job_id}").json()["started_at"]
            started_at = datetime.fromisoformat(started.replace("Z", "+00:00"))
            start = (started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)).timestamp()
    return end - start


def main() -> None:
    results = {}
    for label, (settings, arrival) in MODES.items():
        with tempfile.TemporaryDirectory(prefix="lt-bench-") as root:
            server = Server(Path(root) / "artifacts", executor="ray", **settings).start()
            try:
                times = []
                for seed in range(REPEATS):
                    if arrival == "idle":
                        wait_for_standby(server, seed + 1)
                    times.append(first_trial_seconds(server, seed, queued=arrival == "queued"))
                results[label] = times
            finally:
                server.stop()
    medians = {label: statistics.median(times) for label, times in results.items()}
    print(f"{'mode':<24} {'runs (s)':<20} {'median (s)':>10} {'÷ ' + BASELINE:>14}")
    for label, times in results.items():
        runs = " ".join(f"{t:.2f}" for t in times)
        ratio = medians[label] / medians[BASELINE]
        print(f"{label:<24} {runs:<20} {medians[label]:>10.2f} {ratio:>13.2f}x")
    out = ROOT / "bench" / "results" / "job_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "spec": SPEC,
        "repeats": REPEATS,
        "ahead": AHEAD,
        "modes": {label: {"settings": s, "arrival": arrival} for label, (s, arrival) in MODES.items()},
        "seconds": results,
        "median": medians,
        "baseline": BASELINE,
        "ratio_to_baseline": {label: medians[label] / medians[BASELINE] for label in medians},
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
