"""``lodotune reproduce``: the report's rows against the fidelity test's values, the bowl against
its analytic optimum, missing data and paper scale without a GPU as rows with the reason, the
verdict rules on hand-made numbers, and bad input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lodo
import schedules
from tuner.cli import app
from tuner.reproduce import (
    EXPERIMENTS,
    PaperValue,
    markdown,
    reproduce,
    run_asha_experiment,
    run_experiment,
    run_onepass_experiment,
    run_studies_experiment,
    studies_verdict,
    verdict,
)
from tuner.rundir import read_json
from tuner.runtime import Runtime

LOCAL = Runtime("local")


@pytest.fixture(scope="module")
def rosenbrock_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return out, reproduce(out, experiments=["rosenbrock"], scale="paper")


def test_rosenbrock_rows_at_paper_scale_are_the_fidelity_tests_values(rosenbrock_report):
    out, report = rosenbrock_report
    rows = {r["optimizer"]: r for r in report["rows"]}
    assert list(rows) == ["adam", "momentum", "rmsprop", "yogi", "lodo"]
    # tests/tuner/test_fidelity.py: the paper's and an independent Keras-semantics computation
    assert rows["adam"]["ours"] == pytest.approx(0.00005342, rel=0.01)
    assert rows["yogi"]["ours"] == pytest.approx(0.0007912, rel=0.001)
    assert rows["momentum"]["ours"] == pytest.approx(0.0001359, rel=0.01)
    assert abs(rows["lodo"]["ours"] - 0.001040) < 3 * 0.0000214 and rows["lodo"]["std"] > 0
    assert [rows[n]["verdict"] for n in rows] == ["match", "differs", "differs", "match", "within spread"]
    assert "misprint" in rows["momentum"]["note"] and "chaotic" in rows["rmsprop"]["note"]
    assert rows["adam"]["std"] == 0 and rows["adam"]["runs"] == 8 and rows["adam"]["diverged"] == 0
    assert rows["lodo"]["paper"] == 0.001040 and rows["lodo"]["paper_std"] == 0.0000214
    assert all(r["source"].startswith("paper Table 6") for r in rows.values())
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    text = (out / "report.md").read_text()
    assert "| adam | 5.342e-05 | 5.342e-05 | 0/8 |" in text and "rosenbrock/evaluation/curves.png" in text
    assert set(report["versions"]) >= {"python", "torch", "numpy"} and report["scale"] == "paper"


def test_a_second_run_reads_the_finished_runs_back(rosenbrock_report):
    out, report = rosenbrock_report
    again = reproduce(out, experiments=["rosenbrock"], scale="paper")
    assert again["rows"] == report["rows"]
    results = json.loads((out / "rosenbrock" / "evaluation" / "results.json").read_text())
    assert results["reused_runs"] == 5 * 8


def test_a_quick_bowl_lands_above_the_newton_optimum_with_lodos_hessian_error_over_training(tmp_path):
    bowl = dataclasses.replace(
        EXPERIMENTS["bowl"], optimizers=("adam", "lodo"), steps={"quick": 400, "paper": 100_000}
    )
    section = run_experiment(bowl, tmp_path, scale="quick", seeds=2, runtime=LOCAL)
    newton, adam, lodo = section["rows"]
    assert newton["optimizer"] == "newton" and newton["verdict"] == "match"
    assert newton["ours"] == pytest.approx(7.411847253913)  # ½σ²tr(H), lodo.md §4.1
    for row in (adam, lodo):
        assert row["ours"] > newton["ours"] and row["verdict"] == "no paper value" and row["paper"] is None
        assert "Table 1" in row["note"]
    assert section["checks"][0].endswith("yes")
    trace = section["hessian_error"]
    assert trace["evaluations"] == [100, 200, 300, 400]
    assert all(0 < e < 1 for e in trace["median"]) and trace["median"][-1] < trace["median"][0]
    assert (tmp_path / "bowl" / "hessian_error.png").read_bytes().startswith(b"\x89PNG")
    assert "quick scale: 400 evaluations where the paper runs 100,000" in section["notes"]


def test_missing_data_and_paper_scale_without_a_gpu_are_rows_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "no-data"))
    report = reproduce(tmp_path / "out", experiments=["resnet"], scale="quick")
    assert {r["verdict"] for r in report["rows"]} == {"not run"} and len(report["rows"]) == 6
    assert all("CIFAR-10" in r["note"] and "not found" in r["note"] for r in report["rows"])
    assert report["experiments"]["resnet"]["status"] == "not run"
    paper = reproduce(tmp_path / "out", experiments=["image-generation"], scale="paper")
    assert all("needs a GPU" in r["note"] for r in paper["rows"])
    assert "Not run: paper scale (300,000 steps) needs a GPU" in markdown(paper)


def test_image_generation_without_mnist_runs_the_digits_stand_in_as_ratios_to_lodo(tmp_path, monkeypatch):
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "no-data"))  # digits ship with scikit-learn
    small = dataclasses.replace(
        EXPERIMENTS["image-generation"],
        optimizers=("adam", "lodo", "lodo-residuals"),
        steps={"quick": 4, "paper": 300_000},
    )
    section = run_experiment(small, tmp_path, scale="quick", seeds=1, runtime=LOCAL)
    assert section["task"] == "digits-autoregression"
    assert any(
        n.startswith("stand-in: digits-autoregression for mnist-autoregression") for n in section["notes"]
    )
    adam, lodo, residuals = section["rows"]
    assert lodo["verdict"] == "match" and lodo["ratio_to_lodo"] == {"ours": 1.0, "paper": 1.0}
    assert adam["ratio_to_lodo"]["paper"] == pytest.approx(0.809 / 0.689)
    assert adam["ratio_to_lodo"]["ours"] == pytest.approx(adam["ours"] / lodo["ours"])
    assert residuals["verdict"] == "not run" and "skipped at quick scale" in residuals["note"]


@pytest.mark.parametrize(
    ("paper", "ours", "std", "deterministic", "expected"),
    [
        (PaperValue(1.0), 1.009, 0.0, True, "match"),
        (PaperValue(1.0), 1.011, 0.0, True, "differs"),
        (PaperValue(1.0, 0.01), 1.029, 0.5, False, "within spread"),  # the paper's std decides
        (PaperValue(1.0, 0.01), 1.031, 0.5, False, "differs"),
        (PaperValue(1.0), 1.29, 0.1, False, "within spread"),  # no paper std: ours
        (PaperValue(1.0), 1.31, 0.1, False, "differs"),
        (PaperValue(None, lost="lost"), 3.0, 0.1, False, "no paper value"),
        (PaperValue(math.inf), None, None, False, "match"),  # both diverged
        (PaperValue(math.inf), 2.0, 0.0, False, "differs"),
        (PaperValue(1.0), None, None, False, "differs"),
    ],
)
def test_verdicts(paper, ours, std, deterministic, expected):
    assert verdict(paper, ours, std, deterministic=deterministic) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"experiments": ["mnist"]},
            r"Invalid experiments: 'mnist' \(allowed: rosenbrock \| rosenbrock-ga \| bowl \|",
        ),
        ({"scale": "full"}, r"Invalid scale: 'full' \(allowed: quick \| paper\)"),
        ({"seeds": 0}, r"Invalid seeds: 0 \(allowed: an integer in 1..256\)"),
        ({"vectorize": "yes"}, r"Invalid vectorize: 'yes' \(allowed: auto \| on \| off\)"),
        ({"studies": 0}, r"Invalid studies: 0 \(allowed: an integer in 1..64\)"),
        ({"studies": 65}, r"Invalid studies: 65 \(allowed: an integer in 1..64\)"),
    ],
)
def test_bad_input_names_the_field_and_the_allowed_values(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        reproduce(tmp_path, **kwargs)


def test_the_command_refuses_an_unknown_experiment_listing_the_known_ones(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "--experiments", "mnist", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Invalid experiments: 'mnist'" in result.output and "image-generation" in result.output


@pytest.mark.parametrize(
    ("paper", "low", "high", "expected"),
    [
        (PaperValue(1.0), 0.5, 2.0, "within spread"),
        (PaperValue(1.0), 1.0, 1.0, "within spread"),  # the range's edge is inside
        (PaperValue(1.0), 1.01, 2.0, "differs"),
        (PaperValue(1.0, 0.01), 1.029, 2.0, "within spread"),  # widened by 3 of the paper's std
        (PaperValue(1.0, 0.01), 1.031, 2.0, "differs"),
        (PaperValue(1.0, 0.01), 0.5, 0.969, "differs"),
        (PaperValue(None, lost="lost"), 0.5, 2.0, "no paper value"),
    ],
)
def test_studies_verdicts(paper, low, high, expected):
    assert studies_verdict(paper, {"min": low, "max": high, "n": 2}) == expected
    assert studies_verdict(PaperValue(1.0), {"min": None, "max": None, "n": 0}) == "differs"


def test_rosenbrock_ga_rows_are_the_median_study_and_the_spread_of_its_studies(tmp_path):
    """Adam alone (the cheapest GA), two studies of two seeds: the row is read off studies.json,
    its verdict follows the range rule, and the tuned values stand beside Table 6's."""
    experiment = dataclasses.replace(EXPERIMENTS["rosenbrock-ga"], optimizers=("adam",))
    section = run_studies_experiment(experiment, tmp_path, scale="quick", seeds=2, studies=2, runtime=LOCAL)
    (row,) = section["rows"]
    root = tmp_path / row["studies"]["run_dir"]
    studies = read_json(root / "studies.json")
    median = studies["per_study"][studies["median_study"]]
    losses = [s["window_loss"]["mean"] for s in studies["per_study"]]
    assert studies["per_study"][0]["seed"] == 0 and len(set(losses)) == 2
    assert row["ours"] == median["window_loss"]["mean"] and row["runs"] == 2
    assert row["studies"]["per_study"] == losses and row["ratio"] == pytest.approx(row["ours"] / 0.00005342)
    inside = min(losses) <= 0.00005342 <= max(losses)
    assert row["verdict"] == ("within spread" if inside else "differs")
    assert row["hyperparameters"] == read_json(root / "hyperparameters.json")["hyperparameters"]
    table6 = schedules.paper_entry("rosenbrock", "adam").values
    assert {k: v["table6"] for k, v in row["table6"].items()} == table6
    assert all(
        v["studies"] == [s["hyperparameters"][k] for s in studies["per_study"]]
        for k, v in row["table6"].items()
    )
    assert (root / "search.png").stat().st_size > 0  # every study's search in one figure
    text = markdown(
        {
            "scale": "quick",
            "device": "cpu",
            "versions": {},
            "verdicts": {},
            "experiments": {"rosenbrock-ga": {k: v for k, v in section.items() if k != "rows"}},
            "rows": section["rows"],
        }
    )
    assert "2 GA studies, each evaluated over 2 seeds" in text and "| adam | lr | 0.9704 |" in text


def _update_script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "update_reproduction.py"
    spec = importlib.util.spec_from_file_location("update_reproduction", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readmes_reproduction_section_is_the_committed_reports_rendering():
    """The README shows what `lodotune reproduce` wrote (docs/reproduce/), never a hand-edited number."""
    script = _update_script()
    root = Path(__file__).resolve().parents[2]
    report = read_json(root / script.DOCS / "report.json")
    assert script.readme_section(report) in (root / "README.md").read_text()
    plots = [p for s in report["experiments"].values() for p in s.get("plots", {}).values()]
    assert plots and all((root / script.DOCS / p).is_file() for p in plots)


def test_the_section_is_spliced_between_its_markers_and_a_readme_without_them_is_refused():
    script = _update_script()
    readme = f"intro\n{script.BEGIN}\nold\n{script.END}\noutro\n"
    assert script.splice(readme, "NEW") == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError, match=r"no .* block to replace"):
        script.splice("intro\n", "NEW")


# --- the Clarke papers' experiments: AdamQLR's ASHA comparison and one-pass's random starts --------


def test_an_adamqlr_experiment_ranks_the_tuned_the_untuned_and_the_asha_tuned_baselines(
    ray_session, tmp_path
):
    """Two samples a search, 3 epochs of the diabetes stand-in (1,014 examples), 2 seeds: the rows
    are the bootstrap medians of the runs' documents, the untuned row runs AdamQLR's defaults at
    batch 3200 (full batch: 3 updates), the baseline is tuned by its own search, the claim check
    follows the numbers, and a rerun reads every search and run back."""
    experiment = dataclasses.replace(
        EXPERIMENTS["adamqlr-uci-energy"],
        baselines=("adam",),
        samples={"quick": 2, "paper": 200},
        epochs={"quick": 3, "paper": 4000},
    )
    section = run_asha_experiment(experiment, tmp_path, scale="quick", seeds=2, runtime=LOCAL)
    assert section["task"] == "diabetes-mlp" and "stand-in" in section["notes"][0]
    rows = {r["optimizer"]: r for r in section["rows"]}
    assert list(rows) == ["adamqlr", "adamqlr (untuned)", "adam"]
    assert {r["verdict"] for r in rows.values()} == {"no paper value"}
    root = tmp_path / "adamqlr-uci-energy"
    tuned = read_json(root / "asha" / "evaluation" / "bootstrap.json")["optimizers"]
    untuned = read_json(root / "untuned" / "evaluation" / "bootstrap.json")["optimizers"]
    assert rows["adamqlr"]["ours"] == tuned["adamqlr"]["test_loss"]["bootstrap_mean"]
    assert rows["adam"]["std"] == tuned["adam"]["test_loss"]["bootstrap_std"]
    assert rows["adamqlr (untuned)"]["ours"] == untuned["adamqlr"]["test_loss"]["bootstrap_mean"]
    untuned_row = rows["adamqlr (untuned)"]
    assert untuned_row["hyperparameters"] == lodo.get("adamqlr").defaults
    assert untuned_row["batch_size"] == 3200 and untuned_row["updates"] == 3  # ⌈1014 / 338⌉
    baseline = read_json(root / "asha" / "baselines" / "adam" / "hyperparameters.json")
    assert rows["adam"]["source"] == "tuned (ASHA)"
    assert rows["adam"]["hyperparameters"] == baseline["hyperparameters"]
    assert rows["adam"]["updates"] == math.ceil(1014 / min(baseline["task_options"]["batch_size"], 338))
    comparable = untuned_row["ours"] <= rows["adam"]["ours"] or (
        untuned_row["ours"] - rows["adam"]["ours"]
    ) <= 3 * math.hypot(untuned_row["std"], rows["adam"]["std"])
    claim, ranking = section["checks"]
    assert claim.startswith("adamqlr (untuned) comparable") and (": yes (" in claim) == comparable
    ranked = sorted(rows.values(), key=lambda r: r["ours"])
    assert ranking.endswith(", ".join(r["optimizer"] for r in ranked))
    again = run_asha_experiment(experiment, tmp_path, scale="quick", seeds=2, runtime=LOCAL)
    assert again["rows"] == section["rows"]
    assert read_json(root / "asha" / "evaluation" / "results.json")["reused_runs"] == 4
    text = markdown(_report("adamqlr-uci-energy", section))
    assert "each tuned by its own ASHA search (2 samples, a budget of 1,014 training examples" in text
    assert (
        "| adamqlr (untuned) | damping 0.001, damping_decrease 0.5, damping_increase 2 | 3200 | 3 (" in text
    )


def test_a_onepass_experiment_compares_onepass_with_random_from_the_same_initialisations(tmp_path):
    experiment = dataclasses.replace(
        EXPERIMENTS["onepass-uci-energy"],
        steps={"quick": 40, "paper": 4000},
        initialisations={"quick": 3, "paper": 200},
    )
    section = run_onepass_experiment(experiment, tmp_path, scale="quick", seeds=None, runtime=LOCAL)
    results = read_json(tmp_path / section["results"])
    assert results["initialisations"] == 3 and results["steps"] == 40
    assert len({json.dumps(init, sort_keys=True) for init in results["initial"]}) == 3
    for row in section["rows"]:
        stat = results["summary"][row["optimizer"]]["metrics"]["test_mse"]
        assert row["verdict"] == "no paper value" and row["runs"] == 3
        assert (row["ours"], row["std"]) == (
            stat["median"]["bootstrap_mean"],
            stat["median"]["bootstrap_std"],
        )
        assert f"best run {stat['best']['value']:.4g}" in row["note"]
    onepass, random = section["rows"]
    claim, pairs = section["checks"]
    assert (": yes (" in claim) == (onepass["ours"] <= random["ours"])
    mse = {(r["method"], r["initialisation"]): r["metrics"]["test_mse"] for r in results["per_run"]}
    lower = sum(mse["onepass", r] < mse["random", r] for r in range(3))
    assert pairs == f"one-pass lower than Random from the same initialisation in {lower} of 3"
    assert (tmp_path / section["plots"]["pairs"]).stat().st_size > 0
    again = run_onepass_experiment(experiment, tmp_path, scale="quick", seeds=None, runtime=LOCAL)
    assert again["rows"] == section["rows"]
    assert read_json(tmp_path / section["results"])["reused_episodes"] == 6


def test_a_clarke_experiment_without_data_is_rows_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "no-data"))
    for name, run in (
        ("adamqlr-uci-energy", run_asha_experiment),
        ("onepass-uci-energy", run_onepass_experiment),
    ):
        experiment = dataclasses.replace(EXPERIMENTS[name], tasks=("uci-energy",))
        section = run(experiment, tmp_path, scale="quick", seeds=2, runtime=LOCAL)
        assert section["status"] == "not run" and section["reason"].startswith("no data: uci-energy")
        assert [r["verdict"] for r in section["rows"]] == ["not run"] * len(experiment.optimizers)
        assert "Not run: no data" in markdown(_report(name, section))


def _report(name: str, section: dict) -> dict:
    return {
        "scale": "quick",
        "device": "cpu",
        "versions": {},
        "verdicts": {},
        "experiments": {name: {k: v for k, v in section.items() if k != "rows"}},
        "rows": section["rows"],
    }
