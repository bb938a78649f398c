"""The tuning driver: run directory, checkpoints, resume after a kill, Local = Ray."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import schedules
from tuner.executors import LocalExecutor, RayExecutor
from tuner.rundir import RunDir
from tuner.runtime import JobContext
from tuner.strategies.ga import TuneConfig, tune


def _ctx(root, executor=None, **fields) -> JobContext:
    return JobContext(RunDir(root), executor_override=executor or LocalExecutor(), **fields)


def small_config(optimizer="adam", generations=3, population=6, seed=7, scale=0.1):
    plan = schedules.schedule_for("rosenbrock").scaled(scale).with_overrides(generations, population)
    return TuneConfig("rosenbrock", optimizer, plan, schedules.space_for(optimizer), seed=seed)


def test_tune_writes_every_generation_and_the_hyperparameters(tmp_path):
    config = small_config()
    events = []
    document = tune(config, _ctx(tmp_path, emit=lambda e: events.append(type(e).__name__)))
    gens = RunDir(tmp_path).finished_generations()
    assert [g["generation"] for g in gens] == [0, 1, 2]
    first = gens[0]
    assert len(first["population"]) == 6 and len(first["elite"]) == 3
    assert first["steps"] == 20 and first["sigma"] == 3.0
    assert len({ind["seed"] for g in gens for ind in g["population"]}) == 18
    on_disk = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert on_disk == json.loads(json.dumps(document))
    assert set(document["hyperparameters"]) == {"lr", "beta1", "beta2"}
    assert document["transforms"] == {"lr": "log", "beta1": "log1m", "beta2": "log1m"}
    assert document["schedule"]["step_scale"] == pytest.approx(0.1)
    assert "torch" in document["versions"]
    assert events.count("GenerationStarted") == 3 and events.count("TrialFinished") == 18
    assert events.count("Checkpoint") == 3
    # The tuned set is the last elite mean, decoded.
    assert document["hyperparameters"] == pytest.approx(gens[-1]["elite_mean"]["values"])


def test_existing_run_needs_resume_and_resume_refuses_another_job(tmp_path):
    tune(small_config(generations=1), _ctx(tmp_path))
    with pytest.raises(ValueError, match="already holds a run"):
        tune(small_config(generations=1), _ctx(tmp_path))
    other = small_config(optimizer="momentum", generations=1)
    with pytest.raises(ValueError, match=r"Cannot resume .*different \['optimizer'"):
        tune(other, _ctx(tmp_path, resume=True))
    with pytest.raises(ValueError, match=r"no config\.json"):
        tune(small_config(), _ctx(tmp_path / "empty", resume=True))


def _tune_command(*, out: Path | None = None, resume: Path | None = None) -> list[str]:
    target = ["--out", str(out)] if out else ["--resume", str(resume)]
    return [
        sys.executable, "-m", "tuner", "tune", "rosenbrock", "lodo", "--generations", "8",
        "--population", "6", "--step-scale", "0.25", "--seed", "3", "--executor", "local",
        "--no-evaluate", *target,
    ]  # fmt: skip


def _outcome(run: Path) -> list[tuple]:
    """What a generation decided (wall times excluded): seeds, values, fitnesses, elite, state."""
    return [
        ([(i["seed"], i["values"], i["fitness"]) for i in g["population"]], g["elite"], g["state"])
        for g in RunDir(run).finished_generations()
    ]


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_tune_command(out=whole), check=True, capture_output=True)
    process = subprocess.Popen(
        _tune_command(out=killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (killed / "generations" / "001.json").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "hyperparameters.json").exists()
    assert 2 <= len(RunDir(killed).finished_generations()) < 8
    subprocess.run(_tune_command(resume=killed), check=True, capture_output=True)
    a = json.loads((whole / "hyperparameters.json").read_text())
    b = json.loads((killed / "hyperparameters.json").read_text())
    assert a["hyperparameters"] == b["hyperparameters"]  # bit-exact, not approximately
    assert _outcome(whole) == _outcome(killed)


def test_local_and_ray_executors_tune_to_identical_values(tmp_path, ray_session):
    config = small_config(optimizer="lodo", generations=2, population=4)
    local = tune(config, _ctx(tmp_path / "local"))
    with RayExecutor() as executor:
        remote = tune(config, _ctx(tmp_path / "ray", executor))
    assert local["hyperparameters"] == remote["hyperparameters"]
