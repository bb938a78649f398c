"""schedules/: transforms against hand values, search spaces against lodo.md §3.1, shipped
schedules against the §3.3 / §3.6 tables typed in here by hand, halving (§3.5) and Table 6
(§5.1) against the data file read here with json, and bad files; ASHA's integer distribution and
the series-SFN ASHA spaces against clarke.md §4.3 / §4.6."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from importlib import resources

import pytest

import lodo
import tasks
from schedules import (
    TRANSFORMS,
    Distribution,
    Generation,
    PaperEntry,
    Schedule,
    SearchSpace,
    apply_halving,
    asha_optimizers,
    asha_space,
    decode,
    describe_schedules,
    encode,
    halved_names,
    load_schedule,
    load_space,
    paper_entry,
    paper_values,
    schedule_for,
    space_for,
)
from schedules import asha as asha_module
from schedules import paper as paper_module

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
    with pytest.raises(
        ValueError,
        match=r"Unknown optimizer 'adamw' \(allowed: lodo \|.*\| sfn-series \| sfn-series-unadaptive\)",
    ):
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

# Table 6 as shipped, read here with json (not through schedules.paper), and the rows with a
# surviving learning rate. Every learning rate in the registry is called lr — LODO's α included
# (§3.5: "lr for Adam/RMSprop/Momentum/Yogi/LARS, α (initial_lr) for all LODO variants"); meta_lr,
# though a rate, is never halved.
TABLE6_FILE = json.loads(resources.files("schedules").joinpath("data/table6.json").read_text())
TABLE6 = TABLE6_FILE["values"]
ROWS = [(task, optimizer) for task, row in TABLE6.items() for optimizer in row]
ROWS_WITH_LR = [
    (task, optimizer) for task, optimizer in ROWS if TABLE6[task][optimizer].get("lr") is not None
]
WITHOUT_LR = [name for name, spec in lodo.OPTIMIZERS.items() if "lr" not in spec.names]
IMAGE = "mnist-autoregression"


def distinct_values(name):
    """Each of the optimizer's hyperparameters at a value of its own, none a registry default."""
    return {h: 0.3 + 0.01 * i for i, h in enumerate(lodo.get(name).names)}


def test_rows_with_and_optimizers_without_a_learning_rate_are_what_the_paper_and_registry_say():
    # guards the parametrizations below against selecting nothing
    assert ("mnist-autoregression", "rmsprop") not in ROWS_WITH_LR and len(ROWS_WITH_LR) == len(ROWS) - 2
    assert sorted(WITHOUT_LR) == ["adamqlr", "levenberg-marquardt", "newton", "sfn-series"]


@pytest.mark.parametrize(("task", "optimizer"), ROWS_WITH_LR)
def test_image_generation_halves_exactly_the_learning_rate_of_every_table6_row(task, optimizer):
    row = TABLE6[task][optimizer]
    # a value lost in extraction (null) stands at the registry default: halving never looks at it
    values = {k: lodo.get(optimizer).defaults[k] if v is None else v for k, v in row.items()}
    halved = apply_halving(schedule_for(IMAGE), optimizer, values)
    assert halved == {**values, "lr": row["lr"] / 2}
    assert halved_names(schedule_for(IMAGE), optimizer) == ("lr",)
    assert values["lr"] == row["lr"]  # the input is not modified


def test_image_generation_halves_lodo_alpha_to_the_papers_number():
    halved = apply_halving(schedule_for(IMAGE), "lodo", paper_values(IMAGE, "lodo"))
    assert halved == {"lr": 0.042295, "meta_lr": 7.946e-6, "beta": 0.9343}  # lodo.md §3.8: α/2 ≈ 0.0423


@pytest.mark.parametrize("name", list(lodo.OPTIMIZERS))
def test_image_generation_halves_the_lr_of_every_registry_optimizer_and_nothing_else(name):
    values = distinct_values(name)
    expected = {**values, "lr": values["lr"] / 2} if "lr" in values else values
    assert apply_halving(schedule_for(IMAGE), name, values) == expected
    assert halved_names(schedule_for(IMAGE), name) == (("lr",) if "lr" in values else ())


@pytest.mark.parametrize("name", WITHOUT_LR)
def test_optimizers_without_a_learning_rate_keep_every_value_including_the_damping(name):
    values = distinct_values(name)  # damping, λ₀ of AdamQLR and series SFN; λ of Levenberg–Marquardt
    assert apply_halving(schedule_for(IMAGE), name, values) == values
    assert halved_names(schedule_for(IMAGE), name) == ()


@pytest.mark.parametrize("name", list(lodo.OPTIMIZERS))
def test_a_schedule_without_halving_changes_nothing(name):
    rosenbrock = schedule_for("rosenbrock")
    assert rosenbrock.halve_first is False
    values = distinct_values(name)
    assert apply_halving(rosenbrock, name, values) == values
    assert halved_names(rosenbrock, name) == ()


@pytest.mark.parametrize(
    "task", ["noisy-quadratic-bowl", "rosenbrock", "resnet18-cifar10", "digits-autoregression"]
)
def test_no_halving_elsewhere(task):
    values = {"lr": 0.2946, "meta_lr": 0.0001394, "beta": 0.897}
    assert apply_halving(schedule_for(task), "lodo", values) == values


def test_halving_refuses_values_without_the_learning_rate_and_unknown_optimizers():
    with pytest.raises(ValueError, match=r"no 'lr' to halve \(allowed: lr \| momentum\)"):
        apply_halving(schedule_for(IMAGE), "momentum", {"momentum": 0.9})
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamw'"):
        halved_names(schedule_for("rosenbrock"), "adamw")


# ---------------------------------------------------------------- Table 6


@pytest.mark.parametrize(("task", "optimizer"), ROWS)
def test_every_table6_row_names_registry_hyperparameters(task, optimizer):
    names = lodo.get(optimizer).names
    assert set(TABLE6[task][optimizer]) <= set(names), names


@pytest.mark.parametrize(("task", "optimizer"), ROWS)
def test_paper_entry_completes_every_row_in_registry_order(task, optimizer):
    row, spec = TABLE6[task][optimizer], lodo.get(optimizer)
    entry = paper_entry(task, optimizer)
    assert list(entry.values) == list(entry.sources) == list(spec.names)
    for name in spec.names:
        if row.get(name) is not None:
            assert (entry.values[name], entry.sources[name]) == (row[name], "paper Table 6")
        else:
            assert entry.values[name] == spec.defaults[name]
            lost = name in row
            assert entry.sources[name] == ("default (Table 6 lost)" if lost else "default (not in Table 6)")
    assert entry.lost == tuple(name for name, value in row.items() if value is None)


def test_paper_entry_puts_the_default_for_rmsprops_lost_image_generation_lr():
    entry = paper_entry(IMAGE, "rmsprop")
    assert entry.values["lr"] == lodo.get("rmsprop").defaults["lr"]
    assert entry.sources["lr"] == "default (Table 6 lost)"
    assert entry.values["rho"] == TABLE6[IMAGE]["rmsprop"]["rho"] == 0.002258
    assert entry.sources["rho"] == entry.sources["momentum"] == "paper Table 6"
    assert entry.lost == ("lr",)
    assert entry.note == TABLE6_FILE["notes"]["rmsprop.lr"]  # a note on RMSprop's lr, every task
    with pytest.raises(ValueError, match=r"lost in extraction: \['lr'\]"):
        paper_values(IMAGE, "rmsprop")  # the strict form still refuses


def test_paper_entry_puts_the_default_for_the_lbfgs_eps_the_table_never_listed():
    for optimizer in ("lbfgs", "olbfgs"):
        entry = paper_entry("noisy-quadratic-bowl", optimizer)
        assert entry.sources == {
            "lr": "paper Table 6",
            "tau": "paper Table 6",
            "eps": "default (not in Table 6)",
        }
        assert entry.values["eps"] == lodo.get(optimizer).defaults["eps"]
        assert entry.values["tau"] == TABLE6["noisy-quadratic-bowl"][optimizer]["tau"]
        assert (entry.lost, entry.note) == ((), None)


def test_paper_entry_notes_apply_to_their_task_and_optimizer_only():
    notes = TABLE6_FILE["notes"]
    assert paper_entry(IMAGE, "lodo").note == notes["lodo.meta_lr@mnist-autoregression"]
    assert paper_entry("rosenbrock", "lodo").note is None
    assert paper_entry(IMAGE, "lodo-no-momentum").note == notes["lodo-no-momentum@mnist-autoregression"]
    assert paper_entry("rosenbrock", "rmsprop").note == notes["rmsprop.lr"]
    assert paper_entry(IMAGE, "adam").note is None


def test_every_note_key_names_a_table6_row_and_registry_hyperparameter():
    # key form <optimizer>[.<hyperparameter>][@<task>]
    for key in TABLE6_FILE["notes"]:
        head, _, task = key.partition("@")
        optimizer, _, name = head.partition(".")
        tasks_with_row = [t for t, row in TABLE6.items() if optimizer in row]
        assert (task in tasks_with_row) if task else tasks_with_row, key
        assert not name or name in lodo.get(optimizer).names, key


def test_paper_entry_is_a_value_and_a_fresh_copy():
    first = paper_entry(IMAGE, "adam")
    first.values["lr"] = 1.0
    assert paper_entry(IMAGE, "adam").values["lr"] == TABLE6[IMAGE]["adam"]["lr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.note = "changed"
    assert isinstance(first, PaperEntry)


@pytest.mark.parametrize("function", [paper_entry, paper_values])
def test_a_pair_without_a_row_names_the_available_pairs(function):
    with pytest.raises(
        ValueError,
        match=r"^No Table 6 values for rosenbrock/lars \(available: noisy-quadratic-bowl/adam, .*"
        r"resnet18-cifar10/lodo\)$",
    ):
        function("rosenbrock", "lars")
    with pytest.raises(ValueError, match=r"^No Table 6 values for rosenbrock/adamw"):
        function("rosenbrock", "adamw")


def test_a_row_key_outside_the_registry_is_a_data_error(monkeypatch):
    table = {"notes": {}, "values": {"rosenbrock": {"adam": {"lr": 0.1, "beta_1": 0.9}}}}
    monkeypatch.setattr(paper_module, "_table6", lambda: table)
    with pytest.raises(
        ValueError,
        match=r"^Invalid Table 6 hyperparameter of rosenbrock/adam: 'beta_1' "
        r"\(allowed: lr \| beta1 \| beta2\)$",
    ):
        paper_entry("rosenbrock", "adam")


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


# ---------------------------------------------------------------- ASHA: int_uniform, series SFN


def asha_space_with(monkeypatch, params, optimizer="sfn-series"):
    """``asha_space(optimizer)`` as if the shipped file gave it ``params``."""
    shipped = asha_module._shipped()
    spaces = {**shipped.spaces, optimizer: {"paper": "x", "params": params}}
    monkeypatch.setattr(asha_module, "_shipped", lambda: shipped.model_copy(update={"spaces": spaces}))
    return asha_space(optimizer)


def test_int_uniform_is_a_closed_integer_range():
    terms = Distribution(distribution="int_uniform", low=1, high=20)
    assert (terms.low, terms.high) == (1, 20) and isinstance(terms.low, int) and isinstance(terms.high, int)
    assert terms.model_dump(mode="json") == {"distribution": "int_uniform", "low": 1, "high": 20}
    assert [terms.contains(v) for v in (1, 20, 7, 7.0)] == [True] * 4  # both ends; a trial's floats
    assert not any(terms.contains(v) for v in (0, 21, 7.5, -1, math.inf, math.nan, True))
    single = Distribution(distribution="int_uniform", low=0, high=0)  # low == high: one value
    assert single.contains(0) and not single.contains(1)


def test_log_distributions_are_unchanged_by_int_uniform():
    lr = Distribution(distribution="loguniform", low=1e-3, high=5)  # an integer bound reads as a float
    assert isinstance(lr.high, float) and lr.model_dump(mode="json")["high"] == 5.0
    assert lr.contains(5) and lr.contains(1e-3) and not lr.contains(5.1)
    flipped = Distribution(distribution="one_minus_loguniform", low=1e-4, high=0.3)
    assert flipped.contains(0.9) and not flipped.contains(0.5)


INTEGER = r" \(allowed: an integer >= 0\)"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"distribution": "int_uniform", "low": 1.0, "high": 20},
            r"params\.terms: Invalid low of int_uniform: 1\.0" + INTEGER,
        ),
        (
            {"distribution": "int_uniform", "low": 1, "high": 20.5},
            r"params\.terms: Invalid high of int_uniform: 20\.5" + INTEGER,
        ),
        (
            {"distribution": "int_uniform", "low": -1, "high": 2},
            r"params\.terms: Invalid low of int_uniform: -1" + INTEGER,
        ),
        (
            {"distribution": "int_uniform", "low": True, "high": 2},
            r"params\.terms: Invalid low of int_uniform: True" + INTEGER,
        ),
        (
            {"distribution": "int_uniform", "low": "1", "high": 2},
            r"params\.terms: Invalid low of int_uniform: '1'" + INTEGER,
        ),
        (
            {"distribution": "int_uniform", "low": 5, "high": 2},
            r"params\.terms: Invalid range: \[5, 2\] \(allowed: low <= high for int_uniform\)",
        ),
        ({"distribution": "int_uniform", "low": 1}, r"params\.terms\.high: required key is missing"),
        (
            {"distribution": "uniform", "low": 1, "high": 2},
            r"params\.terms\.distribution: Input should be 'loguniform', 'one_minus_loguniform' or "
            r"'int_uniform' \(got 'uniform'\)",
        ),
        (
            {"distribution": "loguniform", "low": 0, "high": 1},
            r"params\.terms: Invalid low of loguniform: 0\.0 \(allowed: a finite number > 0\)",
        ),
        (
            {"distribution": "loguniform", "low": 1, "high": math.inf},
            r"params\.terms: Invalid high of loguniform: inf",
        ),
        (
            {"distribution": "loguniform", "low": 2.0, "high": 1.0},
            r"params\.terms: Invalid range: \[2\.0, 1\.0\] \(allowed: low < high\)",
        ),
        (  # a key inside a dict of models: its allowed keys are the distribution's
            {"distribution": "int_uniform", "low": 1, "high": 2, "step": 1},
            r"unknown key 'params\.terms\.step' \(allowed keys: distribution \| low \| high\)",
        ),
    ],
)
def test_bad_distributions_name_the_field_and_the_allowed_values(monkeypatch, params, message):
    with pytest.raises(ValueError, match=rf"^Invalid ASHA space of sfn-series: {message}"):
        asha_space_with(monkeypatch, {"terms": params})


def test_int_uniform_space_names_are_checked_against_the_registry(monkeypatch):
    with pytest.raises(
        ValueError, match=r"Invalid hyperparameter of sfn-series in its ASHA space: 'momentum'"
    ):
        asha_space_with(monkeypatch, {"momentum": {"distribution": "int_uniform", "low": 0, "high": 1}})


K_AND_A = {
    "terms": {"distribution": "int_uniform", "low": 1, "high": 20},
    "acceleration_order": {"distribution": "int_uniform", "low": 0, "high": 9},
}


def test_series_sfn_spaces_are_the_papers():
    # clarke.md §4.6: λ : log-U[1e-8, 1] for both; the unadaptive one also α : log-U[1e-3, 5] and
    # μ : log-U[1e-3, 0.95]; §4.3: K uniform on 1..20, a on 0..⌊(K − 1)/2⌋ (here 0..9, clipped)
    adaptive = asha_space("sfn-series").describe()["params"]
    assert adaptive == {"damping": {"distribution": "loguniform", "low": 1e-8, "high": 1.0}, **K_AND_A}
    unadaptive = asha_space("sfn-series-unadaptive").describe()["params"]
    assert unadaptive == {
        "lr": {"distribution": "loguniform", "low": 1e-3, "high": 5.0},
        "momentum": {"distribution": "loguniform", "low": 1e-3, "high": 0.95},
        "damping": {"distribution": "loguniform", "low": 1e-8, "high": 1.0},
        **K_AND_A,
    }
    assert {"sfn-series", "sfn-series-unadaptive"} <= set(asha_optimizers())
    for name in asha_optimizers():
        assert set(asha_space(name).params) <= set(lodo.get(name).names), name
    notes = asha_module._shipped().notes
    assert {"sfn-series", "sfn-series.acceleration_order", "sfn-series-unadaptive"} <= set(notes)


# clarke.md §4.6: the tuned winners, (K, a, λ₀) and (α, μ, K, a, λ)
ADAPTIVE_WINNERS = [(9, 4, 1.46e-6), (16, 6, 5.19e-4), (14, 2, 0.0933), (5, 2, 4.1e-7), (5, 2, 1.04e-4)]
ADAPTIVE_WINNERS += [(19, 6, 0.239), (13, 6, 0.478)]
UNADAPTIVE_WINNERS = [
    (1.787, 0.717, 18, 8, 0.0244),
    (1.957, 0.592, 12, 0, 2.38e-4),
    (0.305, 0.428, 13, 5, 0.0577),
    (0.108, 0.327, 1, 0, 1.9e-4),
    (0.562, 0.115, 2, 0, 2.4e-3),
]


def test_the_papers_tuned_values_lie_in_the_spaces_and_run_unclipped():
    names = ("terms", "acceleration_order", "damping")
    rows = [("sfn-series", dict(zip(names, w, strict=True))) for w in ADAPTIVE_WINNERS]
    names = ("lr", "momentum", "terms", "acceleration_order", "damping")
    rows += [("sfn-series-unadaptive", dict(zip(names, w, strict=True))) for w in UNADAPTIVE_WINNERS]
    for name, values in rows:
        space = asha_space(name)
        assert all(space.params[k].contains(v) for k, v in values.items()), (name, values)
        kwargs = lodo.get(name).to_kwargs(lodo.get(name).check_values(values))
        assert (kwargs["terms"], kwargs["acceleration_order"]) == (
            values["terms"],
            values["acceleration_order"],
        )


@pytest.mark.parametrize("name", ["sfn-series", "sfn-series-unadaptive"])
def test_independent_k_and_a_draws_reach_exactly_the_papers_pairs(name):
    # every (K, a) the independent draws can give, after the registry's clip, is one the paper's
    # sampler draws (a within [0, ⌊(K − 1)/2⌋] for its K), and every such pair is reachable
    space, spec = asha_space(name), lodo.get(name)
    terms, order = space.params["terms"], space.params["acceleration_order"]
    reached = set()
    for k in range(terms.low, terms.high + 1):
        for a in range(order.low, order.high + 1):
            kwargs = spec.to_kwargs(spec.check_values({"terms": k, "acceleration_order": a}))
            reached.add((kwargs["terms"], kwargs["acceleration_order"]))
    assert reached == {(k, a) for k in range(1, 21) for a in range((k - 1) // 2 + 1)}
