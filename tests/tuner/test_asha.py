"""The ASHA strategy: settings, search spaces, and one real job on the session's local Ray."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import lodo
import schedules
from schedules import asha as asha_spaces
from tuner import events as ev
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext
from tuner.strategies.asha import AshaConfig, tune_asha
from tuner.summary import bootstrap_median

COMMON_KEYS = {"strategy", "task", "optimizer", "hyperparameters", "transforms", "settings", "job_seed"}
COMMON_KEYS |= {"task_options", "versions"}
SMALL = {"num_samples": 8, "max_t": 32, "grace_period": 4, "report_every": 4, "budget": "updates"}


@pytest.fixture(scope="module")
def asha_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("asha")
    events = []
    config = AshaConfig("digits-mlp", "momentum", **SMALL, seed=0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        document = tune_asha(config, JobContext(RunDir(root), emit=events.append))
    return config, document, events, root, printed.getvalue()


def test_asha_returns_the_best_trial_and_a_document_of_the_common_shape(asha_run):
    config, document, _, root, _ = asha_run
    assert set(document) >= COMMON_KEYS
    assert document["strategy"] == "asha" and document["metric"] == "validation_loss"
    assert read_json(root / "hyperparameters.json") == document
    assert read_json(root / "config.json") == config.to_dict()
    assert set(document["hyperparameters"]) == set(lodo.get("momentum").names)
    space = schedules.asha_space("momentum")
    for name, dist in space.params.items():
        assert dist.contains(document["hyperparameters"][name])
    assert document["task_options"]["batch_size"] in schedules.batch_sizes()
    finished = [r["value"] for r in document["trials"] if r["value"] is not None]
    assert document["best"]["value"] == min(finished)
    assert (root / "tune" / "asha").is_dir()  # Tune's storage stays inside the run directory


def test_asha_prints_none_of_ray_tunes_console_output(asha_run):
    printed = asha_run[-1]
    assert "Configuration for experiment" not in printed and "View detailed results" not in printed, printed


def test_asha_stops_bad_trials_early(asha_run):
    config, document, events, _, _ = asha_run
    steps = [r["steps"] for r in document["trials"]]
    assert len(steps) == config.num_samples
    assert max(steps) == config.max_t
    assert any(s < config.max_t for s in steps)
    assert document["stopped_early"] == sum(r["stopped_early"] for r in document["trials"]) >= 1
    assert document["rungs"] == [4, 16]
    assert [type(e) for e in events] == [ev.PhaseStarted] + [ev.TrialFinished] * config.num_samples
    assert [e.record for e in events[1:]] == document["trials"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"grace_period": 40, "max_t": 32},
            "Invalid grace_period: 40 (allowed: an integer from 1 to max_t = 32)",
        ),
        ({"reduction_factor": 1.5}, "Invalid reduction_factor: 1.5 (allowed: a number >= 2)"),
        ({"num_samples": 0}, "Invalid num_samples: 0 (allowed: an integer >= 1)"),
        ({"max_t": 0}, "Invalid max_t: 0"),
        ({"report_every": 8, "grace_period": 4}, "Invalid report_every: 8"),
        ({"metric": "accuracy"}, "Invalid metric: 'accuracy'"),
        ({"optimizer": "nope"}, "Unknown optimizer 'nope'"),
        ({"optimizer": "lodo"}, "Invalid optimizer for ASHA: 'lodo' (allowed: adam | momentum"),
        ({"task": "nope"}, "Invalid task: 'nope'"),
        ({"task_options": {"batch": 5}}, "batch"),
    ],
)
def test_bad_settings_are_clear_errors(options, message):
    with pytest.raises(ValueError) as info:
        AshaConfig(**{"task": "digits-mlp", "optimizer": "momentum", **SMALL, **options})
    assert message in str(info.value)


def test_rungs_follow_rays_formula():
    config = AshaConfig("digits-mlp", "adam", max_t=1000, grace_period=10, reduction_factor=4)
    assert config.rungs() == [10, 40, 160, 640]


def test_spaces_are_the_papers_and_unregistered_names_are_skipped():
    assert schedules.asha_optimizers()[:2] == ("adam", "momentum")
    assert set(schedules.asha_optimizers()) <= set(lodo.OPTIMIZERS)
    for name in schedules.asha_optimizers():  # every registered optimizer's space names its hyperparameters
        assert set(schedules.asha_space(name).params) <= set(lodo.get(name).names)
    lr = schedules.asha_space("adam").params["lr"]
    assert (lr.distribution, lr.low, lr.high) == ("loguniform", 1e-6, 1.0)
    momentum = schedules.asha_space("momentum").params["momentum"]
    assert momentum.distribution == "one_minus_loguniform" and momentum.contains(0.95)
    assert not momentum.contains(0.5)


def test_a_space_naming_a_hyperparameter_the_optimizer_lacks_is_refused(monkeypatch):
    shipped = asha_spaces._shipped()
    broken = shipped.model_copy(
        update={"spaces": {"adam": {"paper": "x", "params": {"rho": shipped.spaces["adam"]["params"]["lr"]}}}}
    )
    monkeypatch.setattr(asha_spaces, "_shipped", lambda: broken)
    with pytest.raises(ValueError, match="Invalid hyperparameter of adam in its ASHA space: 'rho'"):
        schedules.asha_space("adam")


def test_bootstrap_median_is_seeded_and_skips_non_finite_runs():
    values = [1.0, 2.0, 3.0, 4.0, math.inf, None]
    a = bootstrap_median(values, resamples=200, seed=1)
    assert a == bootstrap_median(values, resamples=200, seed=1)
    assert a["median"] == 2.5 and a["runs"] == 4
    assert 1.0 <= a["bootstrap_mean"] <= 4.0 and a["bootstrap_std"] > 0
    assert bootstrap_median([math.nan], resamples=10)["median"] is None


KILLED = {"num_samples": 10, "max_t": 300, "grace_period": 25, "report_every": 25, "budget": "updates"}
_FIRST_ATTEMPT = """
import sys
from tuner.strategies.asha import AshaConfig, tune_asha
from tuner.rundir import RunDir
from tuner.runtime import JobContext
config = AshaConfig("digits-mlp", "momentum", **{killed}, seed=3, num_cpus_per_trial=1)
tune_asha(config, JobContext(RunDir(sys.argv[1])))
"""


def test_a_killed_asha_job_resumes_with_its_finished_trials(ray_session, tmp_path):
    # The first attempt runs in its own process (and its own Ray), killed with SIGKILL, process
    # group and all, once three trials are logged; the second resumes it in this process.
    root = tmp_path / "run"
    log = root / "trials.jsonl"
    code = _FIRST_ATTEMPT.format(killed=KILLED)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    first = subprocess.Popen([sys.executable, "-c", code, str(root)], start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert first.poll() is None, "the first attempt ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before_kill = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    assert not (root / "hyperparameters.json").exists()

    config = AshaConfig("digits-mlp", "momentum", **KILLED, seed=3, num_cpus_per_trial=1)
    with pytest.raises(ValueError, match="already holds a run"):
        tune_asha(config, JobContext(RunDir(root)))
    with pytest.raises(ValueError, match=r"Cannot resume .*different \['seed'\]"):
        other = AshaConfig("digits-mlp", "momentum", **KILLED, seed=4)
        tune_asha(other, JobContext(RunDir(root), resume=True))
    events = []
    document = tune_asha(config, JobContext(RunDir(root), resume=True, emit=events.append))
    events = [e for e in events if isinstance(e, ev.TrialFinished)]

    trials = document["trials"]
    assert len(trials) == KILLED["num_samples"] == len({t["trial_id"] for t in trials})
    assert trials[: len(before_kill)] == before_kill  # kept as they were, not run again
    assert [e.index for e in events] == list(range(len(trials)))  # kept ones reported first
    assert document["best"]["trial_id"] in {t["trial_id"] for t in trials}
    # the random search went on where it stopped: the configurations an uninterrupted job draws
    # (their draw does not depend on the trial length, so a short job shows them)
    short = dataclasses.replace(config, max_t=4, grace_period=4, report_every=4)
    whole = tune_asha(short, JobContext(RunDir(tmp_path / "whole")))
    assert sorted(t["seed"] for t in trials) == sorted(t["seed"] for t in whole["trials"])


def test_a_time_budget_that_cuts_trials_off_ends_with_the_finished_ones(ray_session, tmp_path):
    # trials still pending or running when the budget ends come back from Tune without a config
    # One trial at a time (each asks for both of the session's CPUs), none stopped early
    # (grace_period = max_t): 200 trials of 2000 steps take minutes on any machine, while the
    # first ends in seconds, well inside 30 s even on a loaded 2-core runner. (Early stopping
    # made the cut depend on the machine: a fast runner finished all 200 in 30 s.)
    config = AshaConfig(
        "digits-mlp",
        "momentum",
        num_samples=200,
        max_t=2000,
        grace_period=2000,
        report_every=100,
        budget="updates",
        time_budget_s=30,
        num_cpus_per_trial=2,
    )
    document = tune_asha(config, JobContext(RunDir(tmp_path)))
    assert 1 <= len(document["trials"]) < config.num_samples
    assert all(set(t["values"]) == set(lodo.get("momentum").names) for t in document["trials"])
    assert document["best"]["trial_id"] in {t["trial_id"] for t in document["trials"]}


def _trainable_reports(
    monkeypatch, optimizer, *, budget, max_t, every, batch_size=None, task="digits-mlp", task_options=None
):
    """What the Tune trainable reports for one trial, run in this process (tune.report captured)."""
    from ray import tune

    from tuner.strategies import asha

    reports = []
    monkeypatch.setattr(tune, "report", reports.append)
    sampled = {"seed": 5, **({"batch_size": batch_size} if batch_size else {})}
    space = asha_spaces.asha_space(optimizer)
    sampled |= {
        name: d.low if d.distribution != "one_minus_loguniform" else 0.1 for name, d in space.params.items()
    }
    settings = {
        "task": task,
        "optimizer": optimizer,
        "space": space,
        "task_options": task_options or {},
        "device": "cpu",
        "max_t": max_t,
        "report_every": every,
        "metric": "training_loss",
        "threads": 1,
        "optimizer_options": {},
        "budget": budget,
        "final_steps": 100,
    }
    asha._train(sampled, settings)
    return reports


def test_equal_budgets_in_examples_give_a_batch_of_3200_a_64th_of_the_updates_of_a_batch_of_50(monkeypatch):
    # digits-autoregression draws its images with replacement: a batch of 3200 is 3200 examples
    # (its reported metrics on 2 images: each report generates them pixel by pixel)
    small = _trainable_reports(
        monkeypatch,
        "adam",
        budget="examples",
        max_t=3200,
        every=3200,
        batch_size=50,
        task="digits-autoregression",
        task_options={"metric_images": 2},
    )
    large = _trainable_reports(
        monkeypatch,
        "adam",
        budget="examples",
        max_t=3200,
        every=3200,
        batch_size=3200,
        task="digits-autoregression",
        task_options={"metric_images": 2},
    )
    assert (small[-1]["updates"], large[-1]["updates"]) == (64, 1)
    assert small[-1]["examples"] == large[-1]["examples"] == 3200
    assert small[-1]["budget_used"] == large[-1]["budget_used"] == 3200


def test_an_update_of_a_full_batch_task_sees_the_training_set_once():
    import tasks
    from tuner import budgets

    task = tasks.build("digits-mlp", seed=0, device="cpu", batch_size=3200)
    assert budgets.examples_per_update(task, 3200) == len(task.train_set[0]) < 3200
    assert budgets.examples_per_update(task, 50) == 50


@pytest.mark.parametrize("budget", ["examples", "updates"])
def test_adamqlr_and_adam_get_the_same_updates_under_an_examples_or_updates_budget(monkeypatch, budget):
    max_t = 12 * 50 if budget == "examples" else 12
    runs = {
        name: _trainable_reports(monkeypatch, name, budget=budget, max_t=max_t, every=max_t, batch_size=50)[
            -1
        ]
        for name in ("adam", "adamqlr")
    }
    assert runs["adam"]["updates"] == runs["adamqlr"]["updates"] == 12
    assert (runs["adam"]["evaluations"], runs["adamqlr"]["evaluations"]) == (12, 24)
    # the LODO paper's count charges AdamQLR its second evaluation: half the updates
    evaluations = {
        name: _trainable_reports(monkeypatch, name, budget="evaluations", max_t=12, every=12, batch_size=50)[
            -1
        ]
        for name in ("adam", "adamqlr")
    }
    assert (evaluations["adam"]["updates"], evaluations["adamqlr"]["updates"]) == (12, 6)


def test_a_seconds_budget_stops_the_trial_by_its_clock(monkeypatch):
    from tuner import budgets

    clock = iter(range(1000))
    monkeypatch.setattr(budgets, "clock", lambda: float(next(clock)))
    reports = _trainable_reports(monkeypatch, "adam", budget="seconds", max_t=5, every=2, batch_size=50)
    assert reports[-1]["budget_used"] >= 5 and reports[-1]["seconds"] >= 5
    assert all(r["budget_used"] < 5 for r in reports[:-1]) and len(reports) >= 2


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("rosenbrock", {"budget": "examples"}, "Invalid budget for rosenbrock (it has no minibatches"),
        ("digits-mlp", {"budget": "hours"}, "budget"),
    ],
)
def test_a_budget_the_task_cannot_measure_is_refused(task, options, message):
    from tuner.specs import TuneJob

    with pytest.raises(ValueError, match=re.escape(message)):
        TuneJob(task=task, optimizer="adam", strategy="asha", strategy_options=options)


def test_the_default_budget_and_seeds_are_the_papers():
    from tuner.specs import TuneJob
    from tuner.strategies.asha import STRATEGY

    batched = TuneJob(task="digits-mlp", optimizer="adam", strategy="asha")
    config = STRATEGY.config(batched)
    assert batched.seeds == 50 and TuneJob(task="digits-mlp", optimizer="adam").seeds == 8
    # the task's final length in updates at its default batch size (50)
    assert (config.budget, config.max_t, config.grace_period, config.report_every) == (
        "examples",
        50_000,
        500,
        500,
    )
    plain = STRATEGY.config(TuneJob(task="rosenbrock", optimizer="adam", strategy="asha"))
    assert (plain.budget, plain.max_t, plain.grace_period) == ("updates", 200, 10)
    timed = STRATEGY.config(
        TuneJob(task="digits-mlp", optimizer="adam", strategy="asha", strategy_options={"budget": "seconds"})
    )
    assert (timed.max_t, timed.grace_period) == (900, 1)


def test_the_final_runs_give_every_optimizer_the_budget_in_its_own_updates(asha_run):
    from tuner.specs import TuneJob
    from tuner.strategies.asha import final_plan

    _, document, _, _, _ = asha_run  # momentum, 32 updates at its tuned batch size
    job = TuneJob(
        task="digits-mlp",
        optimizer="momentum",
        strategy="asha",
        baselines=["adamqlr", "adam"],
        strategy_options={**SMALL, "tune_baselines": False},
    )
    plan = final_plan(job, document)
    assert plan.entry_steps == {"momentum": 32, "adamqlr": 64, "adam": 32}
    batch = document["task_options"]["batch_size"]
    assert all(options == {"batch_size": batch} for options in plan.entry_task_options.values())
    assert plan.entries["adamqlr"].source.startswith("defaults")
    assert plan.budget["kind"] == "updates" and plan.budget["per_optimizer"]["adamqlr"]["evaluations"] == 64
    # in examples, a batch of 400 gets an eighth of the updates a batch of 50 gets
    examples = {
        **document,
        "budget": {"kind": "examples", "max_t": 4000},
        "task_options": {"batch_size": 400},
    }
    plan = final_plan(job, examples)
    assert plan.entry_steps == {"momentum": 10, "adamqlr": 20, "adam": 10}


def test_an_asha_jobs_baselines_are_tuned_by_asha_in_their_own_space_and_batch_size(ray_session, tmp_path):
    from tuner.jobs import run_tune_job
    from tuner.specs import TuneJob

    job = TuneJob(
        task="digits-mlp",
        optimizer="momentum",
        strategy="asha",
        baselines=["adam"],
        seeds=2,
        strategy_options={"num_samples": 3, "budget": "examples", "max_t": 800, "grace_period": 200},
    )
    documents = run_tune_job(job, JobContext(RunDir(tmp_path)))
    tuned, results = documents["hyperparameters"], documents["results"]
    adam = tuned["baselines"]["adam"]
    own = read_json(tmp_path / "baselines" / "adam" / "hyperparameters.json")
    assert adam["run_dir"] == "baselines/adam" and adam["trials"] == len(own["trials"]) == 3
    assert own["optimizer"] == "adam" and set(own["search_space"]["params"]) == {"lr"}
    assert adam["hyperparameters"] == own["hyperparameters"] != lodo.get("adam").defaults
    assert (
        own["budget"]
        == tuned["budget"]
        == {"kind": "examples", "max_t": 800, "counts": own["budget"]["counts"]}
    )
    entry = results["optimizers"]["adam"]
    assert entry["source"] == "tuned (ASHA)" and entry["hyperparameters"] == own["hyperparameters"]
    assert entry["task_options"] == own["task_options"]
    for name, document in (("momentum", tuned), ("adam", own)):
        batch = document["task_options"]["batch_size"]
        expected = math.ceil(800 / min(batch, 1437))
        assert results["budget"]["per_optimizer"][name]["evaluations"] == max(2, expected)
        assert results["optimizers"][name]["steps"] == max(2, expected)
