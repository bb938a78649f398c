"""GA studies (tuner/studies.py): K independent GA runs of one job from derived seeds, each
evaluated over the job's seeds; the job keeps the median study and reports the spread; a killed
run resumes to the uninterrupted result; a job of one study is the plain GA run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tuner import events as ev
from tuner import ga
from tuner.cli import app
from tuner.jobs import run_tune_job
from tuner.rundir import RunDir, read_json
from tuner.runtime import JobContext, Runtime
from tuner.specs import TuneJob
from tuner.studies import SPREAD_LEVEL, SPREAD_RESAMPLES, Study, median_study

# Rosenbrock at a fifth of its steps (generations of 4 × 3 steps + 1, final runs of 40), 2 seeds
SMALL = {
    "task": "rosenbrock",
    "optimizer": "adam",
    "strategy_options": {"generations": 3, "population": 4},
    "step_scale": 0.2,
    "seeds": 2,
    "seed": 3,
    "baselines": ["momentum"],
}
# the same job on the command line
CLI_ARGS = [
    "tune", "rosenbrock", "adam", "--generations", "3", "--population", "4", "--step-scale", "0.2",
    "--seeds", "2", "--seed", "3", "--baseline", "momentum", "--executor", "local",
]  # fmt: skip
MEDIAN_KEYS = ("study", "studies", "studies_document")

runner = CliRunner()


def _job(**fields) -> TuneJob:
    return TuneJob.model_validate({**SMALL, **fields})


def _outcome(run_dir: RunDir) -> list[tuple]:
    """What each generation decided (wall times excluded): seeds, values, fitnesses, elite, state."""
    return [
        ([(i["seed"], i["values"], i["fitness"]) for i in g["population"]], g["elite"], g["state"])
        for g in run_dir.finished_generations()
    ]


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A job of three studies, run once for the module: its run directory, documents and events."""
    root = tmp_path_factory.mktemp("studies") / "run"
    events: list[ev.Event] = []
    documents = run_tune_job(_job(studies=3), JobContext(RunDir(root), Runtime("local"), emit=events.append))
    return RunDir(root), documents, events


def test_study_seeds_start_at_the_job_seed_never_collide_and_do_not_depend_on_k(monkeypatch):
    for job_seed in range(50):
        seeds = ga.study_seeds(job_seed, 64)
        assert seeds[0] == job_seed and len(set(seeds)) == 64
        assert ga.study_seeds(job_seed, 5) == seeds[:5]
    real = ga.derive_seed

    def colliding(job_seed, stream, *indices):  # study 1's first draw is the job seed itself
        return job_seed if indices == (1,) else real(job_seed, stream, *indices)

    monkeypatch.setattr(ga, "derive_seed", colliding)
    seeds = ga.study_seeds(7, 3)
    assert seeds[0] == 7 and len(set(seeds)) == 3 and seeds[1] == real(7, ga._STUDY_STREAM, 1, 1)


def _study(index: int, mean: float | None) -> Study:
    return Study(index, index, {"optimizer": "adam"}, {"optimizers": {"adam": {"mean": mean}}})


def test_the_median_study_of_an_even_number_is_the_lower_middle_one():
    assert median_study([_study(0, 3.0), _study(1, 1.0), _study(2, 2.0)]).index == 2
    assert median_study([_study(0, 4.0), _study(1, 1.0), _study(2, 3.0), _study(3, 2.0)]).index == 3
    assert median_study([_study(0, None), _study(1, 5.0)]).index == 1  # no finite run ranks last
    assert median_study([_study(0, 1.0), _study(1, 1.0), _study(2, 1.0)]).index == 1  # ties by index


def test_three_studies_keep_the_median_study_and_run_the_baselines_once(three):
    run_dir, documents, _ = three
    studies = documents["studies"]
    assert read_json(run_dir.studies_path) == json.loads(json.dumps(studies))
    assert run_dir.search_plot_path.read_bytes().startswith(b"\x89PNG")  # the studies' searches together
    seeds = [s["seed"] for s in studies["per_study"]]
    assert seeds == ga.study_seeds(3, 3) and seeds[0] == 3 and len(set(seeds)) == 3
    for s in studies["per_study"]:
        study = run_dir.study(s["study"])
        assert s["run_dir"] == f"studies/{s['study']}" and read_json(study.config_path)["seed"] == s["seed"]
        tuned = read_json(study.hyperparameters_path)
        assert tuned["job_seed"] == s["seed"] and tuned["hyperparameters"] == s["hyperparameters"]
        assert [g["generation"] for g in study.finished_generations()] == [0, 1, 2]
        assert all("study" not in g for g in study.finished_generations())  # files as a plain GA run's
        evaluated = read_json(study.evaluation_dir / "results.json")
        assert list(evaluated["optimizers"]) == ["adam"]  # the baselines are not the studies'
        assert evaluated["seeds"] == [ga.evaluation_seed(3, r) for r in range(2)]  # the job's seeds
        row = evaluated["optimizers"]["adam"]
        assert s["window_loss"] == {"mean": row["mean"], "std": row["std"]}
        assert (s["diverged"], s["runs"]) == (row["diverged"], row["runs"])

    ranked = sorted(studies["per_study"], key=lambda s: (s["window_loss"]["mean"], s["study"]))
    k = studies["median_study"]
    assert k == ranked[1]["study"]
    hyperparameters = read_json(run_dir.hyperparameters_path)
    assert hyperparameters == json.loads(json.dumps(documents["hyperparameters"]))
    assert [hyperparameters[key] for key in MEDIAN_KEYS] == [k, 3, "studies.json"]
    assert {key: v for key, v in hyperparameters.items() if key not in MEDIAN_KEYS} == read_json(
        run_dir.study(k).hyperparameters_path
    )

    results = read_json(run_dir.evaluation_dir / "results.json")
    assert list(results["optimizers"]) == ["adam", "momentum"]
    median_row = read_json(run_dir.study(k).evaluation_dir / "results.json")["optimizers"]["adam"]
    tuned_row = results["optimizers"]["adam"]
    assert tuned_row["mean"] == median_row["mean"] and tuned_row["source"] == "tuned"
    assert [r["window_mean"] for r in tuned_row["per_run"]] == [
        r["window_mean"] for r in median_row["per_run"]
    ]
    assert results["reused_runs"] == 2  # the median study's runs, read back rather than run again


def _numpy_spread(values: list[float], seed: int) -> dict:
    a = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(a, size=(SPREAD_RESAMPLES, a.size), replace=True), axis=1)
    tail = (1 - SPREAD_LEVEL) / 2
    return {
        "median": np.median(a),
        "q25": np.quantile(a, 0.25),
        "q75": np.quantile(a, 0.75),
        "min": a.min(),
        "max": a.max(),
        "ci_low": np.quantile(medians, tail),
        "ci_high": np.quantile(medians, 1 - tail),
        "n": a.size,
    }


def test_the_spread_agrees_with_numpy(three):
    _, documents, _ = three
    studies = documents["studies"]
    per_study = studies["per_study"]
    assert studies["bootstrap"] == {
        "resamples": SPREAD_RESAMPLES,
        "level": SPREAD_LEVEL,
        "seed": 3,
        "interval": "percentile interval of the medians of resamples with replacement",
    }
    losses = [s["window_loss"]["mean"] for s in per_study]
    assert studies["spread"]["window_loss"] == pytest.approx(_numpy_spread(losses, 3), rel=1e-12)
    assert studies["spread"]["window_loss"]["median"] == next(
        s["window_loss"]["mean"] for s in per_study if s["study"] == studies["median_study"]
    )
    for name, got in studies["spread"]["hyperparameters"].items():
        values = [s["hyperparameters"][name] for s in per_study]
        assert got == pytest.approx(_numpy_spread(values, 3), rel=1e-12), name


def test_events_say_which_study_runs(three):
    _, _, events = three
    started = [e for e in events if isinstance(e, ev.StudyStarted)]
    assert [(e.study, e.of, e.seed) for e in started] == [
        (k, 3, s) for k, s in enumerate(ga.study_seeds(3, 3))
    ]
    checkpoints = [e for e in events if isinstance(e, ev.Checkpoint)]
    assert [e.record["study"] for e in checkpoints] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert checkpoints[3].summary.startswith("study 2/3: generation 1:")
    finished = [i for i, e in enumerate(events) if isinstance(e, ev.StudyFinished)]
    ready = [i for i, e in enumerate(events) if isinstance(e, ev.DocumentReady)]
    assert len(finished) == 3 and finished[-1] < ready[0]  # the median is known once every study is


def test_a_killed_cli_run_resumes_to_the_uninterrupted_result(three, tmp_path):
    whole = three[0]
    killed = RunDir(tmp_path / "killed")
    command = [sys.executable, "-m", "tuner", *CLI_ARGS, "--studies", "3", "--out", str(killed.root)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not killed.study(1).generation_path(0).exists():  # study 1 has stored a generation
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not killed.hyperparameters_path.exists() and not killed.studies_path.exists()
    assert len(killed.study(0).finished_generations()) == 3

    result = runner.invoke(app, [*CLI_ARGS, "--studies", "3", "--resume", str(killed.root)])
    assert result.exit_code == 0, result.output
    assert "study 3/3 (seed" in result.output and "3 studies of adam on rosenbrock: spread" in result.output
    assert read_json(killed.hyperparameters_path) == read_json(whole.hyperparameters_path)  # bit-exact
    assert read_json(killed.studies_path) == read_json(whole.studies_path)
    for k in range(3):
        assert _outcome(killed.study(k)) == _outcome(whole.study(k))
    a, b = (read_json(r.evaluation_dir / "results.json")["optimizers"] for r in (whole, killed))
    for name in ("adam", "momentum"):
        assert [r["window_mean"] for r in a[name]["per_run"]] == [
            r["window_mean"] for r in b[name]["per_run"]
        ]


def test_one_study_is_the_plain_ga_run_and_study_0_of_three(three, tmp_path):
    run_dir = RunDir(tmp_path / "single")
    job = _job()
    assert job.studies == 1
    documents = run_tune_job(job, JobContext(run_dir, Runtime("local")))
    assert set(documents) == {"hyperparameters", "results"}
    assert not any(key in documents["hyperparameters"] for key in MEDIAN_KEYS)
    assert not run_dir.studies_path.exists() and not (run_dir.root / "studies").exists()
    assert all("study" not in g for g in run_dir.finished_generations())
    assert read_json(run_dir.config_path)["seed"] == 3  # the GA's own config, as before studies
    # study 0 of a job of three runs at the job seed: it is this run, record for record
    study_0 = three[0].study(0)
    assert read_json(run_dir.hyperparameters_path) == read_json(study_0.hyperparameters_path)
    assert _outcome(run_dir) == _outcome(study_0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"studies": 0}, "Invalid studies: 0 (allowed: an integer from 1 to 64)"),
        ({"studies": 65}, "Invalid studies: 65 (allowed: an integer from 1 to 64)"),
        ({"studies": "3"}, "Input should be a valid integer"),
        ({"studies": 3, "evaluate": False}, "Invalid studies: 3 with evaluate false (allowed: 1;"),
        (
            {"studies": 2, "task": "digits-mlp", "strategy": "asha", "strategy_options": {}},
            "Invalid studies: 2 with strategy asha (allowed: 1; studies are independent runs of strategy ga)",
        ),
    ],
)
def test_bad_studies_are_errors_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _job(**fields)


def test_the_command_line_refuses_bad_studies_and_a_resume_with_other_studies(three):
    result = runner.invoke(app, [*CLI_ARGS, "--studies", "65", "--out", "unused"])
    assert result.exit_code == 2 and "Invalid studies: 65 (allowed: an integer from 1 to 64)" in result.output
    result = runner.invoke(app, [*CLI_ARGS, "--studies", "2", "--resume", str(three[0].root)])
    assert (
        result.exit_code == 2 and "it was started with different ['studies', 'study_seeds']" in result.output
    )
