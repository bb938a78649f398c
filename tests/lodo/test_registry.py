"""The registry is the test database: every record builds the class it names and trains, and its
flags (``seeded``, ``options``, ``learning_rate``) agree with the class they describe."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import lodo
from lodo.lodo import LODO
from tuner.trial import TrialSpec, run_trial

# The issue's list, typed by hand: what the registry must hold. Every other test enumerates the
# registry itself (ALL), so a new record takes part without being named here twice.
NAMES = [
    "lodo",
    "lodo-diagonal",
    "lodo-global",
    "lodo-residuals",
    "lodo-no-momentum",
    "lodo-sgd",
    "adam",
    "momentum",
    "sgd",
    "rmsprop",
    "yogi",
    "lars",
    "lbfgs",
    "olbfgs",
    "bfgs",
    "levenberg-marquardt",
    "newton",
    "adamqlr",
    "sfn-series",
    "sfn-series-unadaptive",
]

ALL = list(lodo.OPTIMIZERS)
LODO_FAMILY = [name for name, spec in lodo.OPTIMIZERS.items() if issubclass(spec.resolve(), LODO)]


def constructor_arguments(cls) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the MRO (the LODO
    ablations hand theirs on to LODO's ``__init__``)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self", "params"}


def rosenbrock_values(name):
    """A step of 1 (LODO's default α) overshoots Rosenbrock's curvature (the tuner finds ~0.3):
    such a learning rate runs at 0.05, everything else at its default."""
    spec = lodo.get(name)
    rate = spec.learning_rate
    return {rate: 0.05} if rate is not None and spec.defaults[rate] >= 1 else {}


def test_registry_holds_exactly_the_issue_names():
    assert list(lodo.OPTIMIZERS) == NAMES


@pytest.mark.parametrize("name", ALL)
def test_record_builds_its_class_with_its_defaults(name):
    spec = lodo.get(name)
    cls = spec.resolve()
    assert cls.__name__ == spec.target.rsplit(":", 1)[1]
    x = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    options = {"total_steps": 10} if spec.needs_total_steps else {}
    opt = spec.build([x], **options)
    assert isinstance(opt, cls)
    group = opt.param_groups[0]
    for h in spec.hyperparameters:
        if h.name in ("beta1", "beta2"):
            assert group["betas"][("beta1", "beta2").index(h.name)] == h.default
        else:
            assert group[h.name] == h.default, h.name
    assert all(h.kind in ("rate", "decay", "other") for h in spec.hyperparameters)
    if not spec.target.startswith("lodo."):
        return  # torch's own defaults differ from the paper's (SGD lr 1e-3 vs Keras 0.01)
    # For our classes, the registry's default is the constructor's (no second source of truth).
    signature = inspect.signature(cls.__init__).parameters
    for h in spec.hyperparameters:
        if h.name in signature:
            assert signature[h.name].default == h.default, h.name


@pytest.mark.parametrize("name", ALL)
def test_record_runs_a_trial_and_counts_evaluations(name):
    result = run_trial(TrialSpec("rosenbrock", name, rosenbrock_values(name), seed=0, steps=21))
    assert not result.diverged, result.error
    assert len(result.losses) == 21
    assert result.metrics["loss"] >= 0


@pytest.mark.parametrize("name", ALL)
def test_record_decreases_rosenbrock(name):
    result = run_trial(TrialSpec("rosenbrock", name, rosenbrock_values(name), seed=0, steps=50))
    assert result.losses[-1] < result.losses[0]


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamw' \(allowed: lodo \| "):
        lodo.get("adamw")
    x = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(
        ValueError, match=r"Invalid hyperparameter 'momentum' for adam \(allowed: lr \| beta1"
    ):
        lodo.build("adam", [x], {"momentum": 0.9})


def test_describe_is_plain_data():
    records = {r["name"]: r for r in json.loads(json.dumps(lodo.describe()))}
    assert list(records) == ALL
    assert records["adam"]["hyperparameters"][0] == {
        "name": "lr",
        "default": 0.001,
        "kind": "rate",
        "description": "learning rate",
    }
    assert records["lbfgs"]["evaluation"] == "gradient-pair"
    assert records["adamqlr"]["evaluation"] == "same-batch-outputs"
    assert records["sfn-series"]["evaluation"] == "same-batch-loss"
    assert records["sfn-series-unadaptive"]["evaluation"] == "loss"  # fixed damping: one evaluation


def test_describe_lists_seeded_learning_rate_and_options():
    records = {r["name"]: r for r in lodo.describe()}
    for name, record in records.items():
        spec = lodo.get(name)
        assert (record["seeded"], record["learning_rate"]) == (spec.seeded, spec.learning_rate), name
        assert record["options"] == {k: list(v) for k, v in spec.options.items()}, name
    lodo_record = records["lodo"]
    assert (lodo_record["seeded"], lodo_record["learning_rate"]) == (True, "lr")  # α, not meta_lr
    assert lodo_record["options"] == {"meta_dtype": ["float64", "float32"]}
    adam = records["adam"]
    assert (adam["seeded"], adam["learning_rate"], adam["options"]) == (False, "lr", {})
    for name in ("levenberg-marquardt", "newton", "adamqlr", "sfn-series"):  # λ / damping is no rate
        assert records[name]["learning_rate"] is None, name
    assert records["sfn-series-unadaptive"]["learning_rate"] == "lr"  # α; its fixed λ is no rate


@pytest.mark.parametrize("name", ALL)
def test_seeded_exactly_when_the_class_takes_a_seed(name):
    spec = lodo.get(name)
    assert spec.seeded == ("seed" in constructor_arguments(spec.resolve()))


def test_the_seeded_records_are_the_lodo_family():
    # guards the test above against a helper that finds no seed anywhere
    assert [name for name in ALL if lodo.get(name).seeded] == LODO_FAMILY
    assert LODO_FAMILY == [
        "lodo",
        "lodo-diagonal",
        "lodo-global",
        "lodo-residuals",
        "lodo-no-momentum",
        "lodo-sgd",
    ]


@pytest.mark.parametrize("name", ALL)
def test_options_are_constructor_arguments(name):
    spec = lodo.get(name)
    assert set(spec.options) <= constructor_arguments(spec.resolve())


def meta_dtypes(opt):
    return {v.dtype for v in opt.meta_state.values() if torch.is_tensor(v) and v.is_floating_point()}


@pytest.mark.parametrize("name", LODO_FAMILY)
def test_meta_dtype_option_sets_the_dtype_of_the_lodo_meta_state(name):
    spec = lodo.get(name)
    for choice, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        x = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
        opt = spec.build([x], **spec.check_options({"meta_dtype": choice}), seed=0)
        x.grad = torch.ones_like(x)
        opt.step()
        opt.step()
        assert meta_dtypes(opt) == {dtype}, choice  # θ, momentum, buffers and meta slots
        assert x.dtype == torch.float64 and bool(torch.isfinite(x).all())
    x = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    assert meta_dtypes(spec.build([x], seed=0)) == {torch.float64}  # the authors' default


@pytest.mark.parametrize("name", LODO_FAMILY)
def test_meta_dtype_float16_is_refused(name):
    with pytest.raises(ValueError, match=r"^Invalid meta_dtype: 'float16' \(allowed: float64 \| float32\)$"):
        lodo.get(name).check_options({"meta_dtype": "float16"})


@pytest.mark.parametrize("name", [name for name in ALL if not lodo.get(name).options])
def test_records_without_options_refuse_any(name):
    with pytest.raises(ValueError, match=rf"^Invalid option 'meta_dtype' for {name} \(allowed: none\)$"):
        lodo.get(name).check_options({"meta_dtype": "float32"})
    assert lodo.get(name).check_options({}) == {}


@pytest.mark.parametrize("name", ["sfn-series", "sfn-series-unadaptive"])
def test_series_integers_from_a_tuner(name):
    # A tuner proposes floats: K rounds to an integer >= 1, a to [0, ⌊(K − 1)/2⌋].
    x = torch.nn.Parameter(torch.zeros(2))
    group = lodo.build(name, [x], {"terms": 4.6, "acceleration_order": 3.4}).param_groups[0]
    assert (group["terms"], group["acceleration_order"]) == (5, 2)
    group = lodo.build(name, [x], {"terms": 0.2, "acceleration_order": 0.7}).param_groups[0]
    assert (group["terms"], group["acceleration_order"]) == (1, 0)


def test_adamqlr_record_falls_back_to_the_hessian_without_model_outputs():
    x = torch.nn.Parameter(torch.zeros(2))
    assert lodo.build("adamqlr", [x]).param_groups[0]["curvature"] == "auto"
