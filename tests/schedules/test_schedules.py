"""schedules/: transforms against hand values, search spaces against lodo.md §3.1, shipped
schedules against the §3.3 / §3.6 tables typed in here by hand, halving (§3.5), and bad files."""

from __future__ import annotations

import json
import math
import re

import pytest

import lodo
import tasks
from schedules import (
    TRANSFORMS,
    Generation,
    Schedule,
    SearchSpace,
    apply_halving,
    decode,
    describe_schedules,
    encode,
    load_schedule,
    load_space,
    paper_values,
    schedule_for,
    space_for,
)

# lodo.md §3.3, typed from the table.
BOWL_SIGMA = [3, 3, 3, 3, 2, 1.7, 1.4, 1.2, 0.9, 0.6]
ROSENBROCK_SIGMA = [3, 3, 3, 2.5, 2, 1.5, 1, 0.75, 0.5, 0.3]
IMAGE_STEPS = [1000, 1000, 1000, 1000, 1500, 1500, 2000, 3000, 5000, 8000]


def sigmas(schedule):
    return [g.sigma for g in schedule.generations]


def steps(schedule):
    return [g.steps for g in schedule.generations]


# ---------------------------------------------------------------- transforms


def test_transforms_are_the_three_named():
    assert TRANSFORMS == ("log", "log1m", "logit")


@pytest.mark.parametrize(
    ("transform", "x", "u"),
    [
        ("log", 1.0, 0.0),
        ("log", 0.01, math.log(0.01)),
        ("log1m", 0.9, math.log(0.1)),
        ("log1m", 0.0, 0.0),
        ("log1m", 1.0, math.log(1e-30)),  # the authors' floor on 1 − x
        ("logit", 0.5, 0.0),
        ("logit", 0.9, math.log(9.0)),
        ("logit", 0.1, -math.log(9.0)),
    ],
)
def test_encode_matches_hand_values(transform, x, u):
    assert encode(transform, x) == pytest.approx(u, rel=1e-12, abs=1e-15)


def test_log1m_clips_positive_coordinates_to_zero_and_the_clipped_value_is_what_re_encodes():
    assert decode("log1m", 0.5) == 0.0
    assert encode("log1m", decode("log1m", 0.5)) == 0.0  # the GA averages u = 0, not 0.5
    assert decode("log1m", math.log(0.1)) == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("transform", "u"),
    [(t, u) for t in TRANSFORMS for u in (-5.0, -0.3, 0.0, 2.0) if not (t == "log1m" and u > 0)],
)
def test_round_trip_inside_the_domain(transform, u):
    assert encode(transform, decode(transform, u)) == pytest.approx(u, abs=1e-12)


@pytest.mark.parametrize(("transform", "u"), [("log", 1e4), ("log", -1e4), ("logit", 100.0), ("logit", -1e3)])
def test_extreme_coordinates_decode_to_values_that_still_encode(transform, u):
    x = decode(transform, u)
    assert math.isfinite(encode(transform, x))
    if transform == "logit":
        assert 0.0 < x < 1.0


@pytest.mark.parametrize(
    ("transform", "x", "allowed"),
    [
        ("log", 0.0, "x > 0"),
        ("log", -1.0, "x > 0"),
        ("log1m", 1.5, "0 <= x <= 1"),
        ("log1m", -0.1, "0 <= x <= 1"),
        ("logit", 0.0, "0 < x < 1"),
        ("logit", 1.0, "0 < x < 1"),
        ("log", math.nan, "a finite number"),
    ],
)
def test_encode_refuses_values_outside_the_domain(transform, x, allowed):
    with pytest.raises(ValueError, match=rf"transform '{transform}'.*\(allowed: {re.escape(allowed)}\)"):
        encode(transform, x)


def test_unknown_transform_lists_the_allowed():
    with pytest.raises(ValueError, match=r"Invalid transform: 'exp' \(allowed: log \| log1m \| logit\)"):
        decode("exp", 0.0)


# ---------------------------------------------------------------- search spaces


def transforms_of(optimizer, **kwargs):
    return space_for(optimizer, **kwargs).transforms


def test_rmsprop_rho_is_log_in_code_and_a_decay_in_paper():
    assert transforms_of("rmsprop") == {"lr": "log", "rho": "log", "momentum": "log1m"}
    assert transforms_of("rmsprop", normalization="paper") == {
        "lr": "log",
        "rho": "log1m",
        "momentum": "log1m",
    }


@pytest.mark.parametrize("normalization", ["code", "paper"])
def test_named_decays_use_the_decay_transform_in_both_normalizations(normalization):
    assert transforms_of("adam", normalization=normalization) == {
        "lr": "log",
        "beta1": "log1m",
        "beta2": "log1m",
    }
    assert transforms_of("lodo", normalization=normalization) == {
        "lr": "log",
        "meta_lr": "log",
        "beta": "log1m",
    }
    assert transforms_of("lars", normalization=normalization) == {
        "lr": "log",
        "momentum": "log1m",
        "weight_decay": "log",
    }
    assert transforms_of("lbfgs", normalization=normalization) == {"lr": "log", "tau": "log", "eps": "log"}


def test_code_and_paper_differ_only_for_rmsprop():
    differ = [
        name
        for name in lodo.OPTIMIZERS
        if space_for(name).transforms != space_for(name, normalization="paper").transforms
    ]
    assert differ == ["rmsprop"]
    # optimizers outside the LODO paper are classified by role under both
    assert transforms_of("adamqlr")["damping_decrease"] == "log1m"


def test_logit_replaces_only_the_decay_transform():
    assert transforms_of("rmsprop", decay_transform="logit") == {
        "lr": "log",
        "rho": "log",
        "momentum": "logit",
    }
    assert transforms_of("yogi", normalization="paper", decay_transform="logit") == {
        "lr": "log",
        "beta1": "logit",
        "beta2": "logit",
    }


@pytest.mark.parametrize("name", list(lodo.OPTIMIZERS))
def test_every_registry_optimizer_has_a_space_with_its_names_that_round_trips(name):
    for normalization in ("code", "paper"):
        space = space_for(name, normalization=normalization)
        assert space.names == lodo.get(name).names
        assert SearchSpace.model_validate(space.model_dump()) == space
        assert SearchSpace.model_validate_json(space.model_dump_json()) == space


def test_space_encodes_and_decodes_by_name():
    space = space_for("adam")
    coords = space.encode({"lr": 0.001, "beta1": 0.9, "beta2": 0.999})
    assert coords == pytest.approx({"lr": math.log(0.001), "beta1": math.log(0.1), "beta2": math.log(0.001)})
    values = space.decode({"lr": 0.0, "beta1": 0.7, "beta2": math.log(0.5)})
    assert values == pytest.approx({"lr": 1.0, "beta1": 0.0, "beta2": 0.5})
    assert space.encode(values)["beta1"] == 0.0


def test_space_refuses_missing_or_unknown_names_and_bad_values():
    space = space_for("momentum")
    with pytest.raises(ValueError, match=r"missing \['momentum'\].*allowed: lr \| momentum"):
        space.encode({"lr": 0.1})
    with pytest.raises(ValueError, match=r"unknown \['beta'\]"):
        space.decode({"lr": 0.0, "momentum": 0.0, "beta": 0.0})
    with pytest.raises(ValueError, match=r"^momentum: Invalid value for transform 'log1m': 2\.0"):
        space.encode({"lr": 0.1, "momentum": 2.0})


def test_space_for_refuses_unknown_names():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamw' \(allowed: lodo \|.*\| sfn-series\)"):
        space_for("adamw")
    with pytest.raises(ValueError, match=r"Invalid normalization: 'role' \(allowed: code \| paper\)"):
        space_for("adam", normalization="role")
    with pytest.raises(ValueError, match=r"Invalid decay_transform: 'log' \(allowed: log1m \| logit\)"):
        space_for("adam", decay_transform="log")


def write(tmp_path, data, name="file.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_load_space_reads_a_custom_space_into_registry_order(tmp_path):
    params = [{"name": "momentum", "transform": "logit"}, {"name": "lr", "transform": "log"}]
    space = load_space(write(tmp_path, {"optimizer": "momentum", "params": params}))
    assert space.normalization == "custom"
    assert space.names == ("lr", "momentum")
    assert space.transforms == {"lr": "log", "momentum": "logit"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([{"name": "lr", "transform": "exp"}, {"name": "momentum", "transform": "log1m"}],
         r"params\.0\.transform: Input should be 'log', 'log1m' or 'logit' \(got 'exp'\)"),
        ([{"name": "lr", "transform": "log"}, {"name": "beta", "transform": "log1m"}],
         r"Invalid hyperparameter of momentum: 'beta' \(allowed: lr \| momentum, each once\)"),
        ([{"name": "lr", "transform": "log"}], r"missing momentum"),
        ([{"name": "lr", "transform": "log"}, {"name": "lr", "transform": "log"}], r"'lr' listed twice"),
        ([{"name": "lr", "transform": "log", "bounds": [0, 1]}, {"name": "momentum", "transform": "log1m"}],
         r"unknown key 'params\.0\.bounds' \(allowed keys: name \| transform\)"),
        (None, r"params: Input should be a valid tuple"),
    ],
)  # fmt: skip
def test_load_space_refuses_bad_files(tmp_path, params, message):
    path = write(tmp_path, {"optimizer": "momentum", "params": params})
    with pytest.raises(ValueError, match=rf"Invalid search space file '.*file\.json': .*{message}"):
        load_space(path)


def test_load_space_names_an_unknown_optimizer(tmp_path):
    path = write(tmp_path, {"optimizer": "adamw", "params": []})
    with pytest.raises(ValueError, match=r"optimizer: Unknown optimizer 'adamw' \(allowed: lodo \|"):
        load_space(path)


# ---------------------------------------------------------------- shipped schedules


SHIPPED = [(d["task"], d["source"]) for d in describe_schedules()]


def test_every_task_has_a_default_schedule_and_the_listing_covers_them():
    for task in tasks.TASK_NAMES:
        assert schedule_for(task).task == task
    assert {t for t, _ in SHIPPED} == set(tasks.TASK_NAMES)
    json.dumps(describe_schedules())


@pytest.mark.parametrize(("task", "source"), SHIPPED)
def test_shipped_schedule_validates_round_trips_and_has_ten_generations(task, source):
    schedule = schedule_for(task, "code" if source == "lodotune" else source)
    assert schedule.source == source
    assert len(schedule.generations) == 10
    assert Schedule.model_validate(schedule.model_dump()) == schedule
    assert Schedule.model_validate_json(schedule.model_dump_json()) == schedule


def test_quadratic_bowl_code_and_paper_differ_in_steps_only():
    code, paper = schedule_for("noisy-quadratic-bowl"), schedule_for("noisy-quadratic-bowl", "paper")
    assert sigmas(code) == sigmas(paper) == BOWL_SIGMA
    assert steps(code) == [100, 300, 1000, 10000, 10000, 10000, 10000, 10000, 10000, 10000]
    assert steps(paper) == IMAGE_STEPS
    assert (code.population, code.final_steps, code.halve_first) == (32, 100_000, False)


def test_resnet_generation_5_is_60_steps_in_code_and_50_in_the_paper():
    code, paper = schedule_for("resnet18-cifar10"), schedule_for("resnet18-cifar10", "paper")
    assert steps(code) == [50, 50, 50, 50, 50, 60, 100, 200, 300, 500]
    assert steps(paper) == [50, 50, 50, 50, 50, 50, 100, 200, 300, 500]
    assert sigmas(code) == sigmas(paper) == BOWL_SIGMA
    assert (code.population, paper.population, code.final_steps) == (16, 16, 3000)


@pytest.mark.parametrize("task", ["rosenbrock", "mnist-autoregression"])
def test_code_and_paper_agree_where_the_paper_says_so(task):
    code, paper = schedule_for(task), schedule_for(task, "paper")
    assert code.model_dump(exclude={"source"}) == paper.model_dump(exclude={"source"})


def test_rosenbrock_and_image_generation_by_hand():
    rosenbrock = schedule_for("rosenbrock")
    assert sigmas(rosenbrock) == ROSENBROCK_SIGMA
    assert steps(rosenbrock) == [200] * 10
    assert (rosenbrock.population, rosenbrock.final_steps, rosenbrock.halve_first) == (32, 200, False)
    image = schedule_for("mnist-autoregression")
    assert sigmas(image) == BOWL_SIGMA
    assert steps(image) == IMAGE_STEPS
    assert (image.population, image.final_steps, image.halve_first) == (32, 300_000, True)


@pytest.mark.parametrize(
    ("task", "tuning_steps", "final_steps"),
    [
        ("rosenbrock-classic", 200, 200),
        ("uci-energy", 300, 1000),
        ("uci-protein", 300, 1000),
        ("fashion-mnist-mlp", 300, 1000),
        ("digits-autoregression", 300, 1000),
        ("digits-mlp", 300, 1000),
    ],
)
def test_tasks_without_a_paper_schedule_fall_back_to_lodotune(task, tuning_steps, final_steps):
    schedule = schedule_for(task)
    assert schedule.source == "lodotune"
    assert sigmas(schedule) == ROSENBROCK_SIGMA
    assert steps(schedule) == [tuning_steps] * 10
    assert (schedule.population, schedule.final_steps, schedule.halve_first) == (32, final_steps, False)
    with pytest.raises(ValueError, match=rf"Invalid paper schedule for task: '{task}' \(allowed: noisy-"):
        schedule_for(task, "paper")


def test_schedule_for_refuses_unknown_task_and_source():
    with pytest.raises(
        ValueError, match=r"Invalid task: 'mnist' \(allowed: noisy-quadratic-bowl \| rosenbrock"
    ):
        schedule_for("mnist")
    with pytest.raises(ValueError, match=r"Invalid schedule source: 'table5' \(allowed: code \| paper\)"):
        schedule_for("rosenbrock", "table5")


# ---------------------------------------------------------------- scaling and overrides


def test_scaled_multiplies_steps_rounds_and_records_the_scale():
    quick = schedule_for("noisy-quadratic-bowl").scaled(0.01)
    assert steps(quick) == [2, 3, 10, 100, 100, 100, 100, 100, 100, 100]  # 100·0.01 = 1 → at least 2
    assert quick.final_steps == 1000
    assert quick.step_scale == 0.01
    assert sigmas(quick) == BOWL_SIGMA and quick.population == 32
    again = quick.scaled(2)
    assert again.step_scale == 0.02
    assert steps(again)[:3] == [4, 6, 20]
    assert Schedule.model_validate(again.model_dump()) == again


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True])
def test_scaled_refuses_non_positive_scales(bad):
    with pytest.raises(ValueError, match=r"Invalid step_scale: .* \(allowed: a finite number > 0\)"):
        schedule_for("rosenbrock").scaled(bad)


def test_with_overrides_truncates_or_repeats_the_last_generation():
    schedule = schedule_for("resnet18-cifar10")
    short = schedule.with_overrides(generations=3)
    assert steps(short) == [50, 50, 50] and sigmas(short) == [3, 3, 3]
    long = schedule.with_overrides(generations=12, population=4)
    assert steps(long)[-3:] == [500, 500, 500] and sigmas(long)[-3:] == [0.6, 0.6, 0.6]
    assert long.population == 4
    assert schedule.with_overrides() == schedule
    with pytest.raises(ValueError, match=r"Invalid generations: 0 \(allowed: an integer >= 1\)"):
        schedule.with_overrides(generations=0)
    with pytest.raises(ValueError, match=r"Invalid population: 1 \(allowed: an integer >= 2\)"):
        schedule.with_overrides(population=1)


# ---------------------------------------------------------------- halving


def test_halving_divides_only_the_first_hyperparameter_on_image_generation():
    image = schedule_for("mnist-autoregression")
    table6 = paper_values("mnist-autoregression", "lodo")
    halved = apply_halving(image, "lodo", table6)
    assert halved == {"lr": pytest.approx(0.042295), "meta_lr": 7.946e-6, "beta": 0.9343}  # lodo.md §3.8
    assert table6["lr"] == 0.08459  # not modified
    assert (
        apply_halving(image, "adam", {"lr": 0.0009554, "beta1": 0.9323, "beta2": 0.99505})["lr"] == 0.0004777
    )
    assert apply_halving(image, "newton", {}) == {}
    with pytest.raises(ValueError, match=r"no 'lr' to halve"):
        apply_halving(image, "momentum", {"momentum": 0.9})


@pytest.mark.parametrize(
    "task", ["noisy-quadratic-bowl", "rosenbrock", "resnet18-cifar10", "digits-autoregression"]
)
def test_no_halving_elsewhere(task):
    values = {"lr": 0.2946, "meta_lr": 0.0001394, "beta": 0.897}
    assert apply_halving(schedule_for(task), "lodo", values) == values


# ---------------------------------------------------------------- custom schedule files


GOOD = {
    "task": "rosenbrock",
    "population": 4,
    "final_steps": 50,
    "halve_first": False,
    "generations": [{"sigma": 1.0, "steps": 20}, {"sigma": 0.5, "steps": 20}],
}


def test_load_schedule_reads_a_custom_file_and_a_dumped_schedule(tmp_path):
    custom = load_schedule(write(tmp_path, GOOD))
    assert custom.source == "custom" and custom.step_scale == 1.0
    assert custom.generations == (Generation(sigma=1.0, steps=20), Generation(sigma=0.5, steps=20))
    shipped = schedule_for("noisy-quadratic-bowl", "paper").scaled(0.5)
    assert load_schedule(write(tmp_path, shipped.model_dump(mode="json"), "dump.json")) == shipped


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"generations": [{"sigma": 0.0, "steps": 20}]},
            r"generations\.0\.sigma: Input should be greater than 0",
        ),
        (
            {"generations": [{"sigma": -1.0, "steps": 20}]},
            r"generations\.0\.sigma: Input should be greater than 0",
        ),
        ({"population": 1}, r"population: Input should be greater than or equal to 2 \(got 1\)"),
        ({"generations": []}, r"generations: Invalid generations: none \(allowed: at least one generation\)"),
        ({"seed": 3}, r"unknown key 'seed' \(allowed keys: task \| source \| population \| generations"),
        (
            {"generations": [{"sigma": 1.0, "steps": 0}]},
            r"generations\.0\.steps: Input should be greater than",
        ),
        ({"generations": [{"sigma": 1.0, "steps": 20, "noise": 1}]}, r"unknown key 'generations\.0\.noise'"),
        ({"task": "mnist"}, r"task: Invalid task: 'mnist' \(allowed: noisy-quadratic-bowl"),
        ({"halve_first": "yes"}, r"halve_first: Input should be a valid boolean"),
        ({"step_scale": 0}, r"step_scale: Input should be greater than 0"),
    ],
)
def test_load_schedule_refuses_broken_files(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ValueError, match=rf"^Invalid schedule file '.*file\.json': (.*; )?{message}"):
        load_schedule(path)


def test_load_schedule_names_a_missing_key_and_bad_json(tmp_path):
    data = dict(GOOD)
    del data["final_steps"]
    with pytest.raises(ValueError, match=r"final_steps: required key is missing"):
        load_schedule(write(tmp_path, data))
    with pytest.raises(ValueError, match=r"': Input should be a valid dictionary or instance of Schedule"):
        load_schedule(write(tmp_path, [GOOD]))
    bad = tmp_path / "bad.json"
    bad.write_text("{population: 4")
    with pytest.raises(ValueError, match=r"Invalid schedule file '.*bad\.json': not JSON"):
        load_schedule(bad)
