"""The registry: names, descriptions, parameter counts, and the errors for bad input."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch

import tasks

EXPECTED_NAMES = (
    "noisy-quadratic-bowl",
    "rosenbrock",
    "rosenbrock-classic",
    "mnist-autoregression",
    "resnet18-cifar10",
    "uci-energy",
    "uci-protein",
    "fashion-mnist-mlp",
    "digits-autoregression",
    "digits-mlp",
    "diabetes-mlp",
)


def mlp_count(*sizes: int) -> int:
    return sum((a + 1) * b for a, b in itertools.pairwise(sizes))


def autoregression_count(stages: int, levels: int) -> int:
    # lodo.md §4.3: 5→20 stem; per block 20→40 (840), depthwise 40×3×9 + 120 (1,200), 120→20 (2,420).
    return 5 * 20 + 20 + stages * 4 * (840 + 1200 + 2420) + 20 * levels + levels


def resnet18_count() -> int:
    def conv_bn(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + 2 * cout

    total, cin = conv_bn(3, 64, 3), 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = block == 0
            total += conv_bn(cin, cout, 3) + conv_bn(cout, cout, 3)
            if first and (stride != 1 or cin != cout):
                total += conv_bn(cin, cout, 1)
            cin = cout
    return total + 512 * 10 + 10


INDEPENDENT_COUNTS = {
    "noisy-quadratic-bowl": 100,
    "rosenbrock": 2,
    "rosenbrock-classic": 2,
    "mnist-autoregression": autoregression_count(5, 256),
    "resnet18-cifar10": resnet18_count(),
    "uci-energy": mlp_count(8, 50, 1),
    "uci-protein": mlp_count(9, 100, 1),
    "fashion-mnist-mlp": mlp_count(784, 50, 10),
    "digits-autoregression": autoregression_count(3, 17),
    "digits-mlp": mlp_count(64, 50, 10),
    "diabetes-mlp": mlp_count(10, 50, 1),
}


def test_names():
    assert tasks.TASK_NAMES == EXPECTED_NAMES


def test_paper_parameter_counts():
    counts = {entry["name"]: entry["num_parameters"] for entry in tasks.describe()}
    assert counts["mnist-autoregression"] == 94_696 == INDEPENDENT_COUNTS["mnist-autoregression"]
    assert counts["resnet18-cifar10"] == 11_173_962 == INDEPENDENT_COUNTS["resnet18-cifar10"]
    assert counts == INDEPENDENT_COUNTS


def test_describe_is_json_and_needs_no_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "nothing-here"))
    entries = json.loads(json.dumps(tasks.describe()))
    assert [entry["name"] for entry in entries] == list(EXPECTED_NAMES)
    for entry in entries:
        assert set(entry) == {
            "name",
            "description",
            "num_parameters",
            "dtype",
            "options",
            "stands_in_for",
            "vectorized",
        }
        assert isinstance(entry["num_parameters"], int)
        for option in entry["options"]:
            assert set(option) == {"name", "default", "description", "allowed"}
    dtypes = {entry["name"]: entry["dtype"] for entry in entries}
    assert dtypes["noisy-quadratic-bowl"] == dtypes["rosenbrock"] == dtypes["rosenbrock-classic"] == "float64"
    assert dtypes["mnist-autoregression"] == dtypes["digits-mlp"] == "float32"
    stands_in = {entry["name"]: entry["stands_in_for"] for entry in entries if entry["stands_in_for"]}
    assert set(stands_in) == {"digits-autoregression", "digits-mlp", "diabetes-mlp"}
    assert stands_in["digits-autoregression"].startswith("mnist-autoregression")
    assert stands_in["digits-mlp"].startswith("fashion-mnist-mlp")
    assert stands_in["diabetes-mlp"].startswith("uci-energy")


def test_unknown_task_lists_every_name():
    with pytest.raises(ValueError, match=r"Unknown task 'foo' \(allowed: ") as caught:
        tasks.build("foo", seed=0)
    assert all(name in str(caught.value) for name in EXPECTED_NAMES)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("noisy-quadratic-bowl", {"sigma": -1.0}, "Invalid sigma: -1.0 (allowed: a finite number > 0)"),
        ("noisy-quadratic-bowl", {"sigma": 0}, "Invalid sigma: 0 (allowed: a finite number > 0)"),
        (
            "noisy-quadratic-bowl",
            {"sigma": float("nan")},
            "Invalid sigma: nan (allowed: a finite number > 0)",
        ),
        ("noisy-quadratic-bowl", {"n": 0}, "Invalid n: 0 (allowed: an integer >= 1)"),
        ("noisy-quadratic-bowl", {"n": 10.0}, "Invalid n: 10.0 (allowed: an integer >= 1)"),
        ("digits-mlp", {"batch_size": 0}, "Invalid batch_size: 0 (allowed: an integer >= 1)"),
        ("digits-autoregression", {"batch_size": -3}, "Invalid batch_size: -3 (allowed: an integer >= 1)"),
        ("digits-autoregression", {"compile": 1}, "Invalid compile: 1 (allowed: true | false)"),
        (
            "digits-autoregression",
            {"metric_images": 0},
            "Invalid metric_images: 0 (allowed: null or an integer >= 1)",
        ),
        ("resnet18-cifar10", {"bn": "batch"}, "Invalid bn: 'batch' (allowed: faithful | standard)"),
        ("resnet18-cifar10", {"batch_size": 0}, "Invalid batch_size: 0 (allowed: an integer >= 1)"),
        ("rosenbrock-classic", {"start": "origin"}, "Invalid start: 'origin' (allowed: fixed | random)"),
        ("uci-energy", {"data_dir": 3}, "Invalid data_dir: 3 (allowed: null or a directory path)"),
        (
            "noisy-quadratic-bowl",
            {"simga": 1.0},
            "Unknown option 'simga' for task 'noisy-quadratic-bowl' (allowed: n (an integer >= 1) | "
            "sigma (a finite number > 0))",
        ),
        ("rosenbrock", {"n": 3}, "Unknown option 'n' for task 'rosenbrock' (allowed: no options)"),
    ],
)
def test_bad_options_name_the_option(name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tasks.build(name, seed=0, **options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "Invalid seed: -1 (allowed: an integer >= 0)"),
        ({"seed": 1.5}, "Invalid seed: 1.5 (allowed: an integer >= 0)"),
        ({"seed": 0, "dtype": torch.int64}, "Invalid dtype: torch.int64 (allowed: float32 | float64"),
        ({"seed": 0, "dtype": "half"}, "Invalid dtype: 'half' (allowed: float32 | float64"),
        ({"seed": 0, "device": "gpu7"}, "Invalid device: 'gpu7'"),
    ],
)
def test_bad_build_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tasks.build("rosenbrock", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(
        ValueError, match=re.escape("Invalid device: 'cuda' (allowed: cpu; this machine has no")
    ):
        tasks.build("rosenbrock", seed=0, device="cuda")


def test_bad_options_are_rejected_before_data_is_read(tmp_path):
    # An invalid option must be reported as such, not hidden behind a missing-file error.
    with pytest.raises(ValueError, match="Invalid bn"):
        tasks.build("resnet18-cifar10", seed=0, bn="nope", data_dir=tmp_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, "float32", "float64"])
def test_dtype_override(dtype):
    expected = dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)
    for name in ("noisy-quadratic-bowl", "rosenbrock", "digits-mlp"):
        task = tasks.build(name, seed=0, dtype=dtype)
        assert task.dtype == expected
        assert all(p.dtype == expected for p in task.parameters())
        assert task.train_loss().dtype == expected
