"""``lodotune``: the tuner's commands plus the service's (serve, submit, jobs, status).

The console script points here so the tuner never imports the service (imports point
api → tuner). ``jobs`` and ``status`` are thin HTTP clients of a running service; ``submit``
sends ``lodotune tune`` straight to a Ray cluster through its Jobs API, no service needed.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from tuner.cli import app, console, fail

API_URL_HELP = "The service (LODOTUNE_API_URL); token from LODOTUNE_API_TOKEN."
ApiUrl = Annotated[str, typer.Option(envvar="LODOTUNE_API_URL", help=API_URL_HELP)]


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the API to the network.")
    ] = "",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 0,
) -> None:
    """Run the HTTP service (settings from LODOTUNE_* variables; binds 127.0.0.1 by default)."""
    import uvicorn

    from .app import create_app
    from .settings import Settings

    settings = Settings()
    settings.host = host or settings.host
    settings.port = port or settings.port
    console.print(
        f"lodotune API on http://{settings.host}:{settings.port} (launcher {settings.launcher}, "
        f"store {settings.resolved_database_url.split('@')[-1]}, "
        f"token {'on' if settings.api_token else 'off'})"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


def _client(url: str) -> httpx.Client:
    token = os.environ.get("LODOTUNE_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _get(url: str, path: str, **params: Any) -> Any:
    try:
        with _client(url) as client:
            response = client.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as err:
        fail(f"cannot reach {url}: {err}")
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.json().get('detail', response.text)}")
    return response.json()


def _progress(job: dict) -> str:
    p = job["progress"]
    study = f"study {p['study'] + 1}/{p['studies']}, " if p.get("study") is not None else ""
    if p["phase"] == "evaluation":
        return f"{study}evaluation {p['trials_done']}/{p['trials_total']}"
    if p["generations"]:
        return (
            f"{study}generation {p['generation']}/{p['generations']}, "
            f"trial {p['trials_done']}/{p['trials_total']}"
        )
    return "-"


@app.command()
def jobs(
    url: ApiUrl = "http://127.0.0.1:8000",
    status: Annotated[
        str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")
    ] = None,
    task: str | None = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the service's jobs, newest first."""
    page = _get(url, "/jobs", status=status, task=task, limit=limit)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table("id", "kind", "status", "task", "optimizer", "progress", "best fitness", "created")
    for job in page["jobs"]:
        best = job["progress"]["best_fitness"]
        table.add_row(
            job["id"],
            job["kind"],
            job["status"],
            job["task"],
            job["optimizer"],
            _progress(job),
            f"{best:.6g}" if best is not None else "-",
            job["created_at"][:19],
        )
    console.print(table)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="A job id.")],
    url: ApiUrl = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One job: status, progress, and its tuned hyperparameters when it has them."""
    job = _get(url, f"/jobs/{job_id}")
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    console.print(
        f"[bold]{job['id']}[/bold] {job['kind']} {job['task']} {job['optimizer']}: "
        f"{job['status']} (attempt {job['attempt']}), {_progress(job)}"
    )
    if job["error"]:
        console.print(f"[red]{job['error']}[/red]")
    if job["kind"] == "tune" and job["status"] == "succeeded":
        document = _get(url, f"/jobs/{job_id}/hyperparameters")
        for name, value in document["hyperparameters"].items():
            console.print(f"  {name} = {value:.6g}")


@app.command()
def submit(
    task: Annotated[str, typer.Argument(help="Task name.")],
    optimizer: Annotated[str, typer.Argument(help="Optimizer to tune.")],
    ray_address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS", help="http://HEAD:8265")],
    out: Annotated[str, typer.Option(help="Run directory on the cluster's shared volume.")] = "",
    num_gpus_per_trial: Annotated[float, typer.Option(min=0.0)] = 0.0,
    driver_num_cpus: Annotated[float, typer.Option(min=0.0)] = 1.0,
    follow: Annotated[bool, typer.Option(help="Stream the job's log until it ends.")] = False,
    extra: Annotated[
        list[str] | None,
        typer.Option("--tune-option", help="More `lodotune tune` options, e.g. '--seeds 4'."),
    ] = None,
) -> None:
    """Submit `lodotune tune TASK OPTIMIZER` to a Ray cluster (Jobs API), without the service.

    The submission id is derived from the run directory, so submitting the same run twice is
    refused by Ray rather than run twice. Ray's token (RAY_AUTH_TOKEN or ~/.ray/auth_token) is sent.
    """
    from ray.job_submission import JobSubmissionClient

    from .launchers import ray_auth_headers

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out or f"/artifacts/runs/{task}-{optimizer}-{stamp}"
    command = [
        "lodotune",
        "tune",
        task,
        optimizer,
        "--ray-address",
        "auto",
        "--out",
        out,
        "--num-gpus-per-trial",
        str(num_gpus_per_trial),
        "--device",
        "cuda" if num_gpus_per_trial > 0 else "cpu",  # Ray hands each trial its GPU
    ]
    for option in extra or []:
        command += shlex.split(option)
    submission = "lodotune-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in out.strip("/"))[-100:]
    try:
        client = JobSubmissionClient(ray_address, headers=ray_auth_headers())
        existing = {job.submission_id: job.status for job in client.list_jobs()}
    except Exception as err:
        fail(f"cannot reach the cluster at {ray_address}: {err}")
    if submission in existing:
        fail(f"{submission} already exists on {ray_address} ({existing[submission]}); pass another --out")
    try:
        client.submit_job(
            entrypoint=shlex.join(command),
            submission_id=submission,
            entrypoint_num_cpus=driver_num_cpus,
            metadata={"lodotune_run": out},
        )
    except Exception as err:
        fail(f"submission to {ray_address} failed: {err}")
    console.print(f"submitted [bold]{submission}[/bold]: {shlex.join(command)}", soft_wrap=True)
    console.print(f"follow: ray job logs --address {ray_address} --follow {submission}", soft_wrap=True)
    if follow:
        import asyncio

        async def tail() -> None:
            async for lines in client.tail_job_logs(submission):
                print(lines, end="")

        asyncio.run(tail())
        console.print(f"job {submission}: {client.get_job_status(submission)}")


__all__ = ["app"]
