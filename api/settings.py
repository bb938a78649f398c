"""Service settings, read from ``LODOTUNE_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the service keeps its jobs and how it runs them.

    The embedded default needs nothing: a SQLite file inside the artifact directory, drivers in
    local worker processes, each trial batch on a local Ray. On a cluster (docker-compose) set
    ``LODOTUNE_DATABASE_URL`` to PostgreSQL, ``LODOTUNE_LAUNCHER=ray-jobs`` and
    ``LODOTUNE_RAY_ADDRESS`` to the head's dashboard (``http://ray-head:8265``).
    """

    model_config = SettingsConfigDict(env_prefix="LODOTUNE_", extra="ignore")

    artifact_dir: Path = Field(Path("artifacts"), description="Run directories, plots, the SQLite file.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///<artifact_dir>/lodotune.db. PostgreSQL: "
        "postgresql+psycopg://user:password@host/db.",
    )
    data_dir: Path | None = Field(None, description="Datasets (MNIST IDX, CIFAR-10 batches, UCI files).")
    launcher: Literal["inprocess", "ray-jobs", "queue"] = Field(
        "inprocess", description="queue: store jobs and run none (benchmarks of the API itself)."
    )
    ray_address: str | None = Field(
        None,
        description="inprocess: a Ray cluster (GCS address) for the trials, else the service's own "
        "local Ray (shared_ray) or a local Ray per job; ray-jobs: the head's Jobs API, e.g. "
        "http://ray-head:8265.",
    )
    shared_ray: bool = Field(
        True,
        description="inprocess, executor ray, no ray_address: start one local Ray (`ray start --head`, "
        "token auth on) with the service and run every job's trials on it, so a driver joins it in "
        "well under a second; false: each driver starts a local Ray of its own (~15 s).",
    )
    executor: Literal["ray", "local"] = Field("ray", description="Where a driver runs its trials.")
    max_concurrent_jobs: int = Field(1, ge=1, description="inprocess: drivers running at once.")
    standby_driver: bool = Field(
        True,
        description="inprocess: while no job runs, or a job waits for room, keep one driver started "
        "ahead (torch imported, the service's Ray joined and its workers started), so the next job's "
        "first trial does not wait seconds for them; costs an idle process (and, with executor ray, "
        "idle workers).",
    )
    driver_num_cpus: float = Field(1.0, ge=0, description="ray-jobs: CPUs reserved for each driver.")
    api_token: SecretStr | None = Field(None, description="When set, every endpoint but /healthz needs it.")
    threads: int = Field(
        4,
        ge=1,
        description="Threads serving the (sync) endpoints; more than a few per core only "
        "adds lock convoys (bench/api_load.py).",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    poll_interval: float = Field(0.5, gt=0, description="Seconds between launcher reconciliations.")
    heartbeat_interval: float = Field(
        2.0, gt=0, description="Seconds between a driver's heartbeats (writes of jobs.heartbeat_at)."
    )
    heartbeat_timeout: float = Field(
        30.0,
        gt=0,
        description="A running driver whose last heartbeat is older than this is taken for hung: "
        "its process group is killed and the job resumes as the next attempt.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="How many times a job may lose its driver (killed, crashed, hung) before it is "
        "failed; a driver that reports the job's own error is never retried.",
    )
    lease_ttl: float = Field(
        15.0,
        gt=0,
        description="Seconds an API process's lease on a running job lasts unrenewed: only the "
        "holder settles or relaunches the job, any process once it has expired.",
    )

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> Settings:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"Invalid heartbeat_timeout: {self.heartbeat_timeout} (allowed: more than "
                f"heartbeat_interval, {self.heartbeat_interval})"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.artifact_dir / 'lodotune.db').resolve()}"

    def job_dir(self, job_id: str) -> Path:
        return (self.artifact_dir / "jobs" / job_id).resolve()
