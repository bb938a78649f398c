"""Shared fixtures. ``ray_session``: one local Ray for the whole test session (each start costs seconds)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, no dashboard and a small object store, shared by every test that asks.

    Its temp dir is a fresh short path under /tmp (Ray's Unix socket paths must stay under 108
    bytes), removed at the end. Token auth stays as Ray sets it. If Ray is already running in this
    process it is used and left alone.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp_dir = tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        _temp_dir=temp_dir,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
