"""The values the final runs use and where each one came from (lodo.md §3.5: Table 6 and GA values
halved for image generation, by the learning-rate role), after a GA or ASHA run and for an
evaluation job. Expected numbers are Table 6's, read from the shipped data file directly."""

from __future__ import annotations

import json
from importlib import resources

import pytest

import lodo
import schedules
from tuner.final import paper_entry, plan_after_tuning, plan_for, reference_entry, tuned_entry
from tuner.specs import EvaluateJob, TuneJob

IMAGE = "mnist-autoregression"
TABLE6 = json.loads(resources.files("schedules").joinpath("data/table6.json").read_text())["values"]
ADAM = TABLE6[IMAGE]["adam"]


def test_table6_values_are_halved_for_image_generation_by_the_learning_rate_role():
    entry = paper_entry(IMAGE, "adam", schedule=schedules.schedule_for(IMAGE))
    assert entry.values == {**ADAM, "lr": ADAM["lr"] / 2} and entry.source == "paper Table 6 (halved)"
    assert entry.value_sources == {
        "lr": "paper Table 6 (halved)",
        "beta1": "paper Table 6",
        "beta2": "paper Table 6",
    }
    assert paper_entry(IMAGE, "adam").values == ADAM  # no schedule: as printed
    lodo_values = paper_entry(IMAGE, "lodo", schedule=schedules.schedule_for(IMAGE)).values
    assert lodo_values == {**TABLE6[IMAGE]["lodo"], "lr": 0.08459 / 2}  # α/2 = 0.0423 (§3.8); η_meta kept


def test_a_lost_table6_value_runs_at_its_default_and_says_so_never_halved():
    image = schedules.schedule_for(IMAGE)
    entry = paper_entry(IMAGE, "rmsprop", schedule=image)  # its lr was lost in extraction
    assert entry.values["lr"] == lodo.get("rmsprop").defaults["lr"]  # not halved: not the paper's value
    assert entry.values["rho"] == TABLE6[IMAGE]["rmsprop"]["rho"]
    assert entry.value_sources["lr"] == "default (Table 6 lost)"
    assert "lr: default (Table 6 lost)" in entry.source and "(halved)" not in entry.source
    lbfgs = paper_entry("noisy-quadratic-bowl", "lbfgs")  # Table 6 lists no ε for L-BFGS
    assert lbfgs.values["eps"] == lodo.get("lbfgs").defaults["eps"]
    assert lbfgs.value_sources["eps"].startswith("default") and "eps: default" in lbfgs.source


def test_baselines_without_a_table6_row_run_at_their_defaults_said_so():
    image = schedules.schedule_for(IMAGE)
    entry = reference_entry(IMAGE, "sgd", schedule=image)
    assert entry.values == lodo.get("sgd").defaults
    assert entry.source == f"defaults (no Table 6 row for {IMAGE}/sgd)"
    assert set(entry.value_sources.values()) == {"default (no Table 6 row)"}
    assert reference_entry(IMAGE, "adam", "defaults", schedule=image).values == lodo.get("adam").defaults


def _ga_document(task: str, optimizer: str, values: dict[str, float]) -> dict:
    return {
        "strategy": "ga",
        "task": task,
        "optimizer": optimizer,
        "hyperparameters": values,
        "schedule": schedules.schedule_for(task).model_dump(mode="json"),
    }


def test_a_ga_document_is_halved_as_its_schedule_says_and_other_strategies_are_not():
    entry = tuned_entry(_ga_document(IMAGE, "adam", ADAM), "file")
    assert entry.values == {**ADAM, "lr": ADAM["lr"] / 2} and entry.source == "file (halved)"
    assert tuned_entry(_ga_document("rosenbrock", "adam", ADAM), "file").values == ADAM
    asha = {**_ga_document(IMAGE, "adam", ADAM), "strategy": "asha"}
    assert tuned_entry(asha, "job x").values == ADAM and tuned_entry(asha, "job x").source == "job x"


@pytest.mark.parametrize("name", [n for n, s in lodo.OPTIMIZERS.items() if s.names])
def test_the_halving_of_a_tuned_set_hits_only_the_learning_rate(name):
    spec = lodo.get(name)
    values = {k: 0.5 for k in spec.names}
    entry = tuned_entry(_ga_document(IMAGE, name, values), "tuned")
    expected = {k: 0.25 if k == spec.learning_rate else 0.5 for k in spec.names}
    assert entry.values == expected  # AdamQLR's and series SFN's damping, LM's λ: untouched


def test_after_a_ga_run_the_tuned_values_and_the_baselines_are_halved_alike():
    job = TuneJob(task=IMAGE, optimizer="lodo", baselines=["adam", "lodo"], step_scale=0.01)
    plan = schedules.schedule_for(IMAGE).scaled(0.01)
    tuned = {"lr": 0.1, "meta_lr": 1e-5, "beta": 0.9}
    document = {**_ga_document(IMAGE, "lodo", tuned), "schedule": plan.model_dump(mode="json")}
    final = plan_after_tuning(
        job, document, schedule=plan, steps=plan.final_steps, step_scale=0.01, task_options={"batch_size": 8}
    )
    assert {n: e.values for n, e in final.entries.items()} == {
        "lodo": {**tuned, "lr": 0.05},
        "adam": {**ADAM, "lr": ADAM["lr"] / 2},
    }
    assert {n: e.source for n, e in final.entries.items()} == {
        "lodo": "tuned (halved)",
        "adam": "paper Table 6 (halved)",
    }
    assert final.steps == 3000 and final.task_options == {"batch_size": 8}


def test_after_an_asha_run_its_batch_size_and_max_t_are_used_and_nothing_is_halved():
    job = TuneJob(task="digits-mlp", optimizer="adam", strategy="asha", baselines=["sgd"])
    document = {
        "strategy": "asha",
        "task": "digits-mlp",
        "optimizer": "adam",
        "hyperparameters": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999},
        "task_options": {"batch_size": 400},
    }
    final = plan_after_tuning(
        job, document, schedule=None, steps=40, step_scale=1.0, task_options={"batch_size": 400}
    )
    assert (
        final.entries["adam"].values == document["hyperparameters"]
        and final.entries["adam"].source == "tuned"
    )
    assert final.entries["sgd"].values == lodo.get("sgd").defaults
    assert (final.steps, final.task_options) == (40, {"batch_size": 400})


def test_an_evaluation_job_refuses_table6_values_the_paper_does_not_have():
    with pytest.raises(ValueError, match=r"No Table 6 values for rosenbrock/sgd .*tuned='defaults'"):
        plan_for(EvaluateJob(task="rosenbrock", optimizers=["adam", "sgd"]))
    plan = plan_for(
        EvaluateJob(task="rosenbrock", optimizers=["adam", "sgd"], hyperparameters={"sgd": {"lr": 0.1}})
    )
    assert plan.entries["sgd"].values == {**lodo.get("sgd").defaults, "lr": 0.1}
    assert plan.entries["sgd"].value_sources == {
        "lr": "given",
        "momentum": "default",
        "weight_decay": "default",
    }
    assert plan.entries["adam"].values == TABLE6["rosenbrock"]["adam"]
    image = plan_for(EvaluateJob(task=IMAGE, optimizers=["rmsprop"], steps=20))
    assert image.entries["rmsprop"].value_sources["lr"] == "default (Table 6 lost)"
