"""Latency and throughput of the HTTP service under concurrent clients.

A real ``lodotune serve`` (uvicorn, one worker) in a subprocess on a free port of 127.0.0.1, with
``LODOTUNE_LAUNCHER=queue`` (jobs are stored, none is run) and a fresh artifact directory: the
embedded SQLite store by default, or a fresh PostgreSQL database with ``--database-url`` (created
for the run on that server and dropped afterwards).

At each concurrency level C (1, 10, 50) C clients, each its own ``httpx.AsyncClient`` holding one
keep-alive connection, first send warm-up requests (not timed), then N timed requests each, back to
back (a closed loop: a client sends its next request when the previous answer is in). Each part
stops starting new requests after ``--max-seconds`` (a slow endpoint would otherwise take many
minutes); the requests then in flight finish and count, and the row says "(cut)". Endpoints:

* ``GET /healthz``   the named baseline: no database, the same middleware, routing, threadpool
                     hop (it is a sync endpoint too) and JSON response;
* ``GET /jobs/{id}`` one job by primary key (ids of jobs created before the run, round robin);
* ``GET /jobs``      a page of the newest 50 job summaries (the default limit; at least 50 jobs
                     are stored), newest first;
* ``POST /tune``     {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4}:
                     validation, an INSERT, and the launcher's reconcile pass.

Per row: mean / p50 / p99 / max latency (client side, request sent → response read), throughput
(timed requests / wall time of the timed part), p99 ÷ /healthz's p99 at the same C (what the
endpoint adds over the bare service), and CPU ms per request of the server process and of this load
generator. Target (issue): p99 < 50 ms at 50 concurrent clients for GET /jobs/{id} and POST /tune;
every row of those two endpoints is marked PASS / MISS against 50 ms, the verdict is the C = 50 rows.
Same-run ratios (issue 13): ``GET /jobs/{id}`` p99 within 1.5× of /healthz's, ``GET /jobs`` p99 within
2× of ``GET /jobs/{id}``'s (column "p99 ÷ job p99"), and the response size per endpoint.

Caveat: the load generator runs on the same machine as the server and shares its cores (2 on the
reference machine; the count and the load average before the run are printed and recorded). In a
closed loop that is saturated, Little's law ties the two: mean latency ≈ C / throughput, and
throughput ≤ cores / (server + client CPU per request), so client CPU inflates the latencies too;
the ratio to /healthz at the same C factors most of that out. ``jobs in store`` grows during the
run (every POST adds one); it is recorded per row because the queue launcher's reconcile reads
every queued job.

Usage: .venv/bin/python bench/api_load.py [--quick] [--requests 200] [--max-seconds 20]
       [--concurrency 1 10 50] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
Writes bench/results/api_load.json (api_load_postgresql.json against PostgreSQL) and keeps the
server's output in bench/results/api_load_server.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
TARGET_P99_MS = 50.0
TARGET_CONCURRENCY = 50
TUNE_BODY = {"task": "rosenbrock", "optimizer": "adam", "generations": 2, "population": 4}
BASELINE = "GET /healthz"
ENDPOINTS = (BASELINE, "GET /jobs/{id}", "GET /jobs", "POST /tune")
TARGET_ENDPOINTS = ("GET /jobs/{id}", "POST /tune")  # the 50 ms target; GET /jobs is judged by ratio
SEED_JOBS = 50  # jobs created before the run, read by GET /jobs/{id}


# the server -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """``lodotune serve``: the venv's console script when it is there, else the same entry point."""
    script = Path(sys.executable).with_name("lodotune")
    if script.is_file():
        return [str(script), "serve", "--port", str(port)]
    return [sys.executable, "-c", "from api.cli import app; app()", "serve", "--port", str(port)]


class Server:
    def __init__(self, artifact_dir: Path, database_url: str | None, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LODOTUNE_ARTIFACT_DIR": str(artifact_dir),
            "LODOTUNE_LAUNCHER": "queue",
            # every POST /tune adds a queued job (none runs): without this the C = 50 part hits
            # the default cap of 1000 and measures 503s
            "LODOTUNE_MAX_QUEUED_JOBS": "1000000",
        }
        for name in ("LODOTUNE_API_TOKEN", "LODOTUNE_DATABASE_URL"):  # no token; the store chosen here
            self.env.pop(name, None)
        if database_url:
            self.env["LODOTUNE_DATABASE_URL"] = database_url
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                serve_command(self.port), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not become ready in {timeout:g} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads) so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def stop(self) -> int | None:
        """SIGTERM (uvicorn shuts down and the app's lifespan closes the store), SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped afterwards (as tests/api/conftest.py)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"lodotune_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# the load -------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class Endpoint:
    def __init__(self, name: str, job_ids: list[str]) -> None:
        self.name, self.job_ids = name, job_ids

    async def send(self, client: httpx.AsyncClient, client_index: int, i: int) -> httpx.Response:
        if self.name == BASELINE:
            return await client.get("/healthz")
        if self.name == "GET /jobs/{id}":
            job_id = self.job_ids[(client_index * 7 + i) % len(self.job_ids)]
            return await client.get(f"/jobs/{job_id}")
        if self.name == "GET /jobs":
            return await client.get("/jobs")
        return await client.post("/tune", json=TUNE_BODY)

    @property
    def expected(self) -> int:
        return 202 if self.name == "POST /tune" else 200


async def run_phase(
    url: str,
    endpoint: Endpoint,
    concurrency: int,
    requests: int,
    warmup: int,
    server: Server,
    max_seconds: float,
) -> dict:
    """Warm-up, then the timed requests; each part stops starting new requests after ``max_seconds``
    (the requests in flight then still finish and count)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=url, limits=limits, timeout=60) for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    warmups = [0]
    sizes: list[int] = []

    async def one(index: int, count: int, timed: bool, deadline: float) -> None:
        client = clients[index]
        for i in range(count):
            start = time.perf_counter()
            if start > deadline:
                return
            try:
                response = await endpoint.send(client, index, i)
                ok = response.status_code == endpoint.expected
                if timed and len(sizes) < 100:
                    sizes.append(len(response.content))
                if not ok:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
            if timed:
                latencies[index].append(time.perf_counter() - start)
            else:
                warmups[0] += 1

    try:
        deadline = time.perf_counter() + max_seconds
        await asyncio.gather(*(one(k, warmup, False, deadline) for k in range(concurrency)))
        warmup_done = warmups[0]
        warmup_errors = len(errors)
        errors.clear()
        server_cpu0, client_cpu0 = server.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        deadline = start + max_seconds
        await asyncio.gather(*(one(k, requests, True, deadline) for k in range(concurrency)))
        wall = time.perf_counter() - start
        server_cpu, client_cpu = server.cpu_seconds() - server_cpu0, time.process_time() - client_cpu0
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))

    values = sorted(x for per_client in latencies for x in per_client)
    n = len(values)
    return {
        "endpoint": endpoint.name,
        "concurrency": concurrency,
        "requests": n,
        "planned_requests": requests * concurrency,
        "cut_at_max_seconds": n < requests * concurrency,
        "warmup_requests": warmup_done,
        "errors": len(errors),
        "response_bytes": round(sum(sizes) / len(sizes)) if sizes else None,
        "warmup_errors": warmup_errors,
        "error_examples": sorted(set(errors))[:3],
        "wall_s": wall,
        "throughput_rps": n / wall if wall > 0 else math.nan,
        "mean_ms": 1e3 * sum(values) / n if n else math.nan,
        "p50_ms": 1e3 * percentile(values, 50),
        "p90_ms": 1e3 * percentile(values, 90),
        "p99_ms": 1e3 * percentile(values, 99),
        "max_ms": 1e3 * values[-1] if values else math.nan,
        "server_cpu_ms_per_request": 1e3 * server_cpu / n if n else math.nan,
        "client_cpu_ms_per_request": 1e3 * client_cpu / n if n else math.nan,
        "server_cpu_cores": server_cpu / wall if wall > 0 else math.nan,
        "client_cpu_cores": client_cpu / wall if wall > 0 else math.nan,
    }


def seed_jobs(url: str, count: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        ids = []
        for _ in range(count):
            response = client.post("/tune", json=TUNE_BODY)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


# the report -----------------------------------------------------------------------------------------


def verdict(row: dict) -> str:
    if row["endpoint"] == BASELINE:
        return "(baseline)"
    if row["endpoint"] not in TARGET_ENDPOINTS:
        return "-"
    ok = row["p99_ms"] < TARGET_P99_MS and row["errors"] == 0
    return "PASS" if ok else "MISS"


def results_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    columns = ("clients", "endpoint", "jobs in store", "requests", "errors", "mean ms", "p50 ms",
               "p99 ms", "max ms", "req/s", "bytes", "p99 ÷ healthz p99", "p99 ÷ job p99",
               "server CPU ms/req", "client CPU ms/req", f"p99 < {TARGET_P99_MS:g} ms")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    previous = None
    for r in rows:
        if previous is not None and r["concurrency"] != previous:
            table.add_section()
        previous = r["concurrency"]
        table.add_row(
            str(r["concurrency"]),
            r["endpoint"],
            str(r["jobs_in_store"]),
            f"{r['requests']}{' (cut)' if r['cut_at_max_seconds'] else ''}",
            str(r["errors"]),
            f"{r['mean_ms']:.2f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.2f}",
            f"{r['throughput_rps']:.0f}",
            str(r["response_bytes"]),
            f"{r['p99_vs_healthz']:.2f}×",
            f"{r['p99_vs_job']:.2f}×" if r["endpoint"] == "GET /jobs" else "",
            f"{r['server_cpu_ms_per_request']:.2f}",
            f"{r['client_cpu_ms_per_request']:.2f}",
            verdict(r),
        )
    return table


def measure(args: argparse.Namespace, database_url: str | None, console: Console) -> dict:
    artifact_dir = Path(tempfile.mkdtemp(prefix="lodotune-api-load-"))
    server = Server(artifact_dir / "artifacts", database_url, args.server_log)
    rows: list[dict] = []
    try:
        t0 = time.perf_counter()
        server.start()
        startup_s = time.perf_counter() - t0
        job_ids = seed_jobs(server.url, SEED_JOBS)
        jobs = len(job_ids)
        console.print(
            f"server pid {server.process.pid} on {server.url} up in {startup_s:.1f} s "
            f"({server.threads()} threads); {jobs} jobs seeded"
        )
        for concurrency in args.concurrency:
            for name in ENDPOINTS:
                row = asyncio.run(
                    run_phase(
                        server.url,
                        Endpoint(name, job_ids),
                        concurrency,
                        args.requests,
                        args.warmup,
                        server,
                        args.max_seconds,
                    )
                )
                row["jobs_in_store"] = jobs
                row["server_threads_after"] = server.threads()
                row["load_avg_1min"] = os.getloadavg()[0]
                if name == "POST /tune":
                    jobs += row["requests"] + row["warmup_requests"]
                rows.append(row)
                console.print(
                    f"  C={concurrency:<3} {name:<15} p50 {row['p50_ms']:7.2f} ms  "
                    f"p99 {row['p99_ms']:7.2f} ms  {row['throughput_rps']:6.0f} req/s  errors {row['errors']}"
                )
    finally:
        returncode = server.stop()
        shutil.rmtree(artifact_dir, ignore_errors=True)
    for row in rows:
        base = next(r for r in rows if r["endpoint"] == BASELINE and r["concurrency"] == row["concurrency"])
        row["p99_vs_healthz"] = row["p99_ms"] / base["p99_ms"]
        row["mean_vs_healthz"] = row["mean_ms"] / base["mean_ms"]
        row["throughput_vs_healthz"] = row["throughput_rps"] / base["throughput_rps"]
        job = next(
            (r for r in rows if r["endpoint"] == "GET /jobs/{id}" and r["concurrency"] == row["concurrency"]),
            None,
        )
        row["p99_vs_job"] = row["p99_ms"] / job["p99_ms"] if job else math.nan
        row["target"] = verdict(row)
    return {"rows": rows, "server_startup_s": startup_s, "server_returncode": returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="40 timed + 5 warm-up requests per client, 6 s per part"
    )
    parser.add_argument("--requests", type=int, default=None, help="timed requests per client (200)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per client (20)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="per row, for the warm-up and again for the timed part: no new request after this "
        "(20 s; 6 s with --quick); a row cut short says so",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server's URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres): "
        "a fresh database is created on it for the run and dropped after; default: the embedded SQLite",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--server-log", type=Path, default=RESULTS_DIR / "api_load_server.log")
    args = parser.parse_args()
    args.requests = args.requests or (40 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.quick else 20)
    args.max_seconds = args.max_seconds or (6.0 if args.quick else 20.0)
    backend = "sqlite"
    if args.database_url and not args.database_url.startswith("sqlite"):
        backend = args.database_url.split(":", 1)[0].split("+", 1)[0]
    out = args.out or RESULTS_DIR / ("api_load.json" if backend == "sqlite" else f"api_load_{backend}.json")

    console = Console(width=200)
    cpus = os.cpu_count()
    load_start = os.getloadavg()
    shared = (
        f"The load generator (this process, one asyncio loop) shares the machine's {cpus} CPU cores "
        f"with the server (and whatever else runs: load average {load_start[0]:.2f} / "
        f"{load_start[1]:.2f} / {load_start[2]:.2f} before the run)."
    )
    console.print(
        f"httpx {httpx.__version__}, python {platform.python_version()}, {cpus} CPUs, store {backend}; "
        f"{args.requests} timed + {args.warmup} warm-up requests per client at C = {args.concurrency}"
    )
    console.print(shared)
    started = time.perf_counter()
    if backend == "sqlite":
        result = measure(args, args.database_url, console)
    else:
        with postgres_database(args.database_url) as url:
            result = measure(args, url, console)
    rows = result["rows"]
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()

    title = (
        f"lodotune API under load ({backend} store, queue launcher, 1 uvicorn worker); "
        f"baseline {BASELINE} at the same number of clients"
    )
    console.print(results_table(rows, title))
    at_target = [
        r for r in rows if r["concurrency"] == TARGET_CONCURRENCY and r["endpoint"] in TARGET_ENDPOINTS
    ]
    for r in at_target:
        console.print(
            f"{r['endpoint']} at {TARGET_CONCURRENCY} clients: p99 {r['p99_ms']:.1f} ms "
            f"(target < {TARGET_P99_MS:g} ms) → {r['target']}; "
            f"{r['p99_vs_healthz']:.2f}× /healthz's p99 ({r['p99_ms'] / r['p99_vs_healthz']:.1f} ms)"
        )
    for r in rows:
        if r["concurrency"] == TARGET_CONCURRENCY and r["endpoint"] == "GET /jobs":
            console.print(
                f"GET /jobs (a page, {r['response_bytes']} bytes) at {TARGET_CONCURRENCY} clients: p99 "
                f"{r['p99_ms']:.1f} ms, {r['p99_vs_job']:.2f}× GET /jobs/{{id}}'s (target ≤ 2×)"
            )
    if not at_target:
        console.print(f"(no run at {TARGET_CONCURRENCY} clients: the target is not judged)")
    console.print(
        f"{shared} Client CPU ms/req is what the load generator itself costs; in a saturated closed "
        f"loop, mean latency ≈ clients / throughput. Server log: {args.server_log}. "
        f"Total {elapsed:.0f} s; load avg at the end {load_end[0]:.2f}."
    )

    document = {
        "machine": {
            "cpu_count": cpus,
            "load_avg_start": load_start,
            "load_avg_end": load_end,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "httpx": httpx.__version__,
            "load_generator_shares_cpus_with_server": True,
            "note": shared,
        },
        "config": {
            "store": backend,
            "launcher": "queue",
            "uvicorn_workers": 1,
            "requests_per_client": args.requests,
            "warmup_per_client": args.warmup,
            "max_seconds_per_part": args.max_seconds,
            "concurrency": args.concurrency,
            "seed_jobs": SEED_JOBS,
            "tune_body": TUNE_BODY,
            "baseline": BASELINE,
            "quick": args.quick,
            "client": "httpx.AsyncClient per client, one keep-alive connection each, one asyncio loop",
        },
        "target": {
            "p99_ms_below": TARGET_P99_MS,
            "concurrency": TARGET_CONCURRENCY,
            "met": bool(at_target) and all(r["target"] == "PASS" for r in at_target),
        },
        "server_startup_s": result["server_startup_s"],
        "server_returncode": result["server_returncode"],
        "server_log": str(args.server_log),
        "rows": rows,
        "elapsed_s": elapsed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
