"""How long a new job shows nothing: from POST /tune (a small rosenbrock adam job, executor ray) to
the first progress event with ``trials_done >= 1`` on its event stream, with the service's own Ray
(LODOTUNE_SHARED_RAY=true, the default) and with each driver starting a Ray of its own
(LODOTUNE_SHARED_RAY=false); a fresh server per mode, REPEATS jobs one after another.

    .venv/bin/python bench/job_start.py  # prints a table, writes bench/results/job_start.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.conftest import Server  # noqa: E402

REPEATS = 3
SPEC = {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4, "evaluate": False}
MODES = {"service Ray": "true", "own Ray per driver": "false"}


def first_trial_seconds(server: Server, seed: int) -> float:
    with server.client() as client:
        start = time.perf_counter()
        job_id = client.post("/tune", json={**SPEC, "seed": seed}).raise_for_status().json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/events", timeout=300) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = json.loads(line.removeprefix("data:"))
                progress = data.get("progress", data)
                if (progress.get("trials_done") or 0) >= 1 or (progress.get("generation") or 0) >= 1:
                    elapsed = time.perf_counter() - start
                    break
                if data.get("status") in ("failed", "cancelled"):
                    raise RuntimeError(f"job {job_id} {data.get('status')}: {data}")
        while client.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running"):
            time.sleep(0.2)
    return elapsed


def main() -> None:
    results = {}
    for label, shared in MODES.items():
        with tempfile.TemporaryDirectory(prefix="lt-bench-") as root:
            server = Server(Path(root) / "artifacts", executor="ray", shared_ray=shared).start()
            try:
                results[label] = [first_trial_seconds(server, seed) for seed in range(REPEATS)]
            finally:
                server.stop()
    medians = {label: statistics.median(times) for label, times in results.items()}
    ratio = medians["own Ray per driver"] / medians["service Ray"]
    print(f"{'mode':<20} {'runs (s)':<24} {'median (s)':>10}")
    for label, times in results.items():
        print(f"{label:<20} {' '.join(f'{t:.2f}' for t in times):<24} {medians[label]:>10.2f}")
    print(f"ratio own/service: {ratio:.1f}x")
    out = ROOT / "bench" / "results" / "job_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"spec": SPEC, "repeats": REPEATS, "seconds": results, "median": medians, "ratio": ratio}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
