"""The ``lodotune`` command line, driven through typer's runner and as an installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lodo
from tuner.cli import app

runner = CliRunner()


def test_optimizers_json_lists_every_optimizer_with_hyperparameters():
    result = runner.invoke(app, ["optimizers", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["name"] for r in records] == list(lodo.OPTIMIZERS)
    lodo_record = records[0]
    assert [(h["name"], h["default"], h["kind"]) for h in lodo_record["hyperparameters"]] == [
        ("lr", 1.0, "rate"),
        ("meta_lr", 0.001, "rate"),
        ("beta", 0.9, "decay"),
    ]


def test_tasks_json_lists_tasks_with_parameter_counts():
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    counts = {r["name"]: r["num_parameters"] for r in json.loads(result.output)}
    assert counts["rosenbrock"] == 2
    assert counts["mnist-autoregression"] == 94_696
    assert counts["resnet18-cifar10"] == 11_173_962


def test_evaluate_writes_results_table_and_plot(tmp_path):
    args = ["evaluate", "rosenbrock", "lodo", "adam", "--seeds", "2", "--steps", "30", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "evals 28–29" in result.output
    document = json.loads((tmp_path / "results.json").read_text())
    assert list(document["optimizers"]) == ["lodo", "adam"]
    assert document["optimizers"]["adam"]["source"] == "paper Table 6"
    assert len(document["optimizers"]["lodo"]["per_run"]) == 2
    assert len(document["optimizers"]["adam"]["per_run"][0]["curve"]) == 30
    assert (tmp_path / "results.md").read_text().startswith("# rosenbrock: 2 seeds × 30 evaluations")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "nope", "adam"], "Invalid task: 'nope' (allowed: "),
        (["evaluate", "rosenbrock", "adamw"], "Invalid optimizer: 'adamw' (allowed: "),
        (["evaluate", "rosenbrock", "lars"], "No Table 6 values for rosenbrock/lars"),
        (
            ["evaluate", "rosenbrock", "adam", "--hyperparameters", "/nonexistent.json"],
            "Invalid hyperparameters file",
        ),
        (["evaluate", "rosenbrock", "adam", "--tuned", "tuned"], "Invalid tuned: 'tuned'"),
        (["evaluate", "rosenbrock", "adam", "--step-scale", "0"], "Invalid step_scale: 0.0"),
        (
            ["evaluate", "rosenbrock", "adam", "--meta-dtype", "float32"],
            "Invalid meta_dtype: 'float32' is an",
        ),
        (["evaluate", "rosenbrock", "lodo", "--meta-dtype", "float16"], "Invalid meta_dtype: 'float16'"),
        (["tune", "rosenbrock", "adamw"], "Invalid optimizer: 'adamw' (allowed: "),
        (["tune", "rosenbrock", "adam", "--step-scale", "-1"], "Invalid step_scale"),
        (
            ["tune", "rosenbrock", "adam", "--schedule", "tabel5"],
            "Invalid strategy_options.schedule: 'tabel5'",
        ),
        (["tune", "rosenbrock", "adam", "--num-samples", "3"], "--num-samples: not options of --strategy ga"),
        (["tune", "rosenbrock", "adam", "--executor", "dask"], "Invalid executor: 'dask'"),
        (["tune", "rosenbrock", "newton"], "no hyperparameters"),
        (["tune", "rosenbrock", "adam", "--strategy", "pbt"], "Invalid strategy: 'pbt'"),
        (["tune", "digits-mlp", "--strategy", "asha"], "Invalid optimizer: None (strategy asha needs one of"),
        (["tune", "digits-mlp", "lodo", "--strategy", "asha"], "Invalid optimizer for ASHA: 'lodo'"),
        (
            ["tune", "digits-mlp", "adam", "--strategy", "asha", "--max-t", "20", "--grace-period", "40"],
            "Invalid grace_period: 40",
        ),
        (
            ["tune", "digits-mlp", "adam", "--strategy", "asha", "--reduction-factor", "1"],
            "Invalid strategy_options.reduction_factor: 1.0",
        ),
        (
            ["tune", "digits-mlp", "adam", "--strategy", "onepass"],
            "Invalid optimizer: strategy onepass tunes its",
        ),
        (
            ["tune", "digits-mlp", "--strategy", "onepass", "--lookback", "0"],
            "Invalid strategy_options.lookback: 0",
        ),
        (
            ["tune", "digits-mlp", "--strategy", "onepass", "--tuned", "beta"],
            "Invalid strategy_options.tuned.0: 'beta'",
        ),
        (
            ["tune", "digits-mlp", "--strategy", "onepass", "--resume", "x"],
            "Invalid resume: strategy onepass cannot",
        ),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_strategies_json_lists_the_three_strategies_with_settings():
    result = runner.invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    assert list(records) == ["ga", "asha", "onepass"]
    assert records["asha"]["settings"]["reduction_factor"] == 4
    assert records["onepass"]["settings"]["lookback"] == 5
    assert records["onepass"]["settings"]["meta_lr"] == 0.05


def test_tune_onepass_end_to_end(tmp_path):
    args = ["tune", "digits-mlp", "--strategy", "onepass", "--steps", "30", "--initialisations", "2"]
    args += ["--initial-lr", "0.02", "--initial-weight-decay", "1e-4", "--initial-momentum", "0.5"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "one-pass SGD on digits-mlp" in result.output
    document = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert document["strategy"] == "onepass" and document["task"] == "digits-mlp"
    assert document["initial"] == {"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5}
    assert len(document["trajectory"]) == 3
    evaluation = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    # two initialisations, each trained by one-pass and by the Random baseline
    assert len(evaluation["per_run"]) == 4 and evaluation["diverged"] == 0
    assert sorted(r["method"] for r in evaluation["per_run"]) == ["onepass", "onepass", "random", "random"]
    # the tuned values re-run as fixed hyperparameters of the registered `sgd`, beside a baseline
    tuned = str(tmp_path / "hyperparameters.json")
    args = [
        "evaluate",
        "digits-mlp",
        "sgd",
        "momentum",
        "--tuned",
        "defaults",
        "--seeds",
        "2",
        "--steps",
        "20",
    ]
    rerun = runner.invoke(app, [*args, "--hyperparameters", tuned, "--out", str(tmp_path / "fixed")])
    assert rerun.exit_code == 0, rerun.output
    fixed = json.loads((tmp_path / "fixed" / "results.json").read_text())["optimizers"]
    assert fixed["sgd"]["hyperparameters"] == document["hyperparameters"]
    assert fixed["sgd"]["source"] == tuned and fixed["sgd"]["diverged"] == 0
    assert fixed["momentum"]["source"] == "defaults"
    onepass = evaluation["summary"]["onepass"]["metrics"]["test_loss"]
    assert onepass["median"]["median"] > 0 and onepass["best"]["initialisation"] in (0, 1)


def test_installed_console_script_runs():
    exe = Path(sys.executable).with_name("lodotune")
    if not exe.exists():
        pytest.skip("lodotune is not installed in this environment (`make test` installs it)")
    out = subprocess.run([str(exe), "optimizers", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)[0]["name"] == "lodo"


@pytest.mark.parametrize("flags", [["--steps", "10"], ["--step-scale", "0.05"]])
def test_short_evaluations_run_and_say_which_window_they_score(tmp_path, flags):
    result = runner.invoke(
        app, ["evaluate", "rosenbrock", "adam", "--seeds", "2", *flags, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["steps"] == 10 and document["window"] == [10, 10]
    assert document["window_rule"].startswith("last evaluation")
    adam = document["optimizers"]["adam"]
    losses = [run["curve"][-1] for run in adam["per_run"]]
    assert adam["mean"] == pytest.approx(sum(losses) / 2)  # the last evaluation of each run
    assert "window: last evaluation" in result.output


def test_meta_dtype_reaches_lodo_and_is_recorded(tmp_path):
    args = [
        "evaluate",
        "rosenbrock",
        "lodo",
        "adam",
        "--seeds",
        "1",
        "--steps",
        "12",
        "--meta-dtype",
        "float32",
    ]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    optimizers = json.loads((tmp_path / "results.json").read_text())["optimizers"]
    assert optimizers["lodo"]["optimizer_options"] == {"meta_dtype": "float32"}
    assert optimizers["adam"]["optimizer_options"] == {}  # only the LODO family takes it
    tune_args = [
        "tune",
        "rosenbrock",
        "lodo",
        "--generations",
        "1",
        "--population",
        "2",
        "--step-scale",
        "0.05",
    ]
    tune_args += [
        "--meta-dtype",
        "float32",
        "--executor",
        "local",
        "--no-evaluate",
        "--out",
        str(tmp_path / "t"),
    ]
    tuned = runner.invoke(app, tune_args)
    assert tuned.exit_code == 0, tuned.output
    assert json.loads((tmp_path / "t" / "config.json").read_text())["optimizer_options"] == {
        "meta_dtype": "float32"
    }
    assert json.loads((tmp_path / "t" / "hyperparameters.json").read_text())["optimizer_options"] == {
        "meta_dtype": "float32"
    }


def test_a_task_option_from_the_command_line_reaches_the_task(tmp_path):
    args = ["evaluate", "digits-mlp", "adam", "--tuned", "defaults", "--seeds", "1", "--steps", "4"]
    result = runner.invoke(app, [*args, "--task-option", "batch_size=3200", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "e" / "results.json").read_text())
    assert evaluation["task_options"] == {"batch_size": 3200}
    assert evaluation["optimizers"]["adam"]["task_options"] == {"batch_size": 3200}
    args = ["tune", "digits-mlp", "adam", "--generations", "1", "--population", "2", "--step-scale", "0.01"]
    args += ["--executor", "local", "--no-evaluate", "--task-option", "batch_size=3200"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "hyperparameters.json").read_text())["task_options"] == {
        "batch_size": 3200
    }


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("batch=3", "Unknown option 'batch' for task 'digits-mlp' (allowed: batch_size (an integer >= 1))"),
        ("batch_size=big", "Invalid batch_size: 'big' (allowed: an integer >= 1)"),
        ("batch_size", "Invalid --task-option: 'batch_size' (allowed: KEY=VALUE"),
    ],
)
def test_a_bad_task_option_names_the_allowed_ones(tmp_path, option, message):
    args = ["evaluate", "digits-mlp", "adam", "--tuned", "defaults", "--seeds", "1", "--steps", "4"]
    result = runner.invoke(app, [*args, "--task-option", option, "--out", str(tmp_path)])
    assert result.exit_code != 0 and message in " ".join(result.output.split())
