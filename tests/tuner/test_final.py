"""The values the final runs use (lodo.md §3.5: Table 6 and GA values halved for image generation)
and the evaluation that follows a GA or ASHA run."""

from __future__ import annotations

import lodo
import schedules
from tuner.asha import AshaConfig
from tuner.final import FinalEvaluation, reference_values, tuned_values
from tuner.tuning import TuneConfig

IMAGE = "mnist-autoregression"
ADAM_TABLE6 = {"lr": 0.0009554, "beta1": 0.9323, "beta2": 0.99505}  # Table 6, image generation


def test_table6_values_are_halved_for_image_generation_final_runs():
    halved, source = reference_values(IMAGE, "adam", schedule=schedules.schedule_for(IMAGE))
    assert halved == {**ADAM_TABLE6, "lr": 0.0009554 / 2} and source == "paper Table 6 (halved)"
    assert reference_values(IMAGE, "adam") == (ADAM_TABLE6, "paper Table 6")  # no schedule: as printed
    lodo_values, _ = reference_values(IMAGE, "lodo", schedule=schedules.schedule_for(IMAGE))
    assert lodo_values == {"lr": 0.08459 / 2, "meta_lr": 7.946e-06, "beta": 0.9343}  # α/2 = 0.0423, §3.8


def test_other_tasks_defaults_and_optimizers_without_table6_are_not_halved():
    rosenbrock = schedules.schedule_for("rosenbrock")
    assert reference_values("rosenbrock", "adam", schedule=rosenbrock) == (
        schedules.paper_values("rosenbrock", "adam"),
        "paper Table 6",
    )
    image = schedules.schedule_for(IMAGE)
    assert reference_values(IMAGE, "adam", "defaults", schedule=image) == (
        lodo.get("adam").defaults,
        "defaults",
    )
    assert reference_values(IMAGE, "sgd", schedule=image) == (lodo.get("sgd").defaults, "defaults")


def _ga_document(task: str, optimizer: str, values: dict[str, float]) -> dict:
    return {
        "task": task,
        "optimizer": optimizer,
        "hyperparameters": values,
        "schedule": schedules.schedule_for(task).model_dump(mode="json"),
    }


def test_a_ga_document_is_halved_as_its_schedule_says_and_other_strategies_are_not():
    document = _ga_document(IMAGE, "adam", ADAM_TABLE6)
    assert tuned_values(document, "file") == ({**ADAM_TABLE6, "lr": 0.0009554 / 2}, "file (halved)")
    assert tuned_values(_ga_document("rosenbrock", "adam", ADAM_TABLE6), "file") == (ADAM_TABLE6, "file")
    asha = {**document, "strategy": "asha"}
    assert tuned_values(asha, "job x") == (ADAM_TABLE6, "job x")


def test_after_a_ga_run_the_tuned_values_and_the_baselines_are_halved_alike():
    plan = schedules.schedule_for(IMAGE).scaled(0.01)
    config = TuneConfig(IMAGE, "lodo", plan, schedules.space_for("lodo"), task_options={"batch_size": 8})
    tuned = {"lr": 0.1, "meta_lr": 1e-5, "beta": 0.9}
    final = FinalEvaluation.after_tuning(config, {"hyperparameters": tuned}, ["adam", "lodo"], step_scale=7.0)
    assert final.entries == {"lodo": {**tuned, "lr": 0.05}, "adam": {**ADAM_TABLE6, "lr": 0.0009554 / 2}}
    assert final.sources == {"lodo": "tuned (halved)", "adam": "paper Table 6 (halved)"}
    assert (final.steps, final.step_scale) == (plan.final_steps, 0.01)  # the schedule's, not the request's
    assert final.steps == 3000 and final.task_options == {"batch_size": 8}


def test_after_an_asha_run_its_batch_size_and_max_t_are_used_and_nothing_is_halved():
    config = AshaConfig("digits-mlp", "adam", max_t=40, grace_period=10)
    document = {
        "hyperparameters": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999},
        "task_options": {"batch_size": 400},
    }
    final = FinalEvaluation.after_tuning(config, document, ["sgd"], step_scale=0.5)
    assert final.entries["adam"] == document["hyperparameters"] and final.sources["adam"] == "tuned"
    assert final.entries["sgd"] == lodo.get("sgd").defaults and final.sources["sgd"] == "defaults"
    assert (final.steps, final.step_scale, final.task_options) == (40, 0.5, {"batch_size": 400})
