"""Fixtures of the service tests: stores on SQLite and on the machine's PostgreSQL, and a real
uvicorn server in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from api.store import JobStore, migrate

POSTGRES_ADMIN_URL = os.environ.get(
    "LODOTUNE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_available() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_admin():
    if not _postgres_available():
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}")
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture
def postgres_url(postgres_admin) -> Iterator[str]:
    """A fresh database, dropped afterwards."""
    name = f"lodotune_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(database_url) -> Iterator[JobStore]:
    migrate(database_url)
    job_store = JobStore(database_url)
    yield job_store
    job_store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lodotune serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, artifact_dir: Path, **settings: str) -> None:
        self.artifact_dir = artifact_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LODOTUNE_ARTIFACT_DIR": str(artifact_dir),
            "LODOTUNE_EXECUTOR": "local",
            "LODOTUNE_POLL_INTERVAL": "0.2",
            # off unless a test asks: a standby's start (torch, Ray workers) after every job takes
            # CPUs from the next on 2 cores, and gives one of jobs posted together a head start
            "LODOTUNE_STANDBY_DRIVER": "false",
            **{f"LODOTUNE_{k.upper()}": v for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        log = (self.artifact_dir.parent / f"server-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import app; app()", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become ready in 60 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def serve(tmp_path) -> Iterator:
    """``serve(**settings)`` starts a server; all are stopped at the end of the test."""
    servers: list[Server] = []

    def start(artifact_dir: Path | None = None, **settings: str) -> Server:
        server = Server(artifact_dir or tmp_path / "artifacts", **settings)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def wait_for(client: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
