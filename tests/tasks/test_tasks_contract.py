"""The Task contract, run over every task (data tasks on tiny files in their real formats).

Every registered task joins this suite through ``BUILDERS``: the protocol, the parameter count,
seeded determinism, same-batch semantics, and metrics that leave the training sequence alone.
"""

from __future__ import annotations

import math

import pytest
import torch

import tasks

# Small batches keep the CNNs quick; the sequences are what matter here, not the sizes.
SMALL = {
    "mnist-autoregression": {"batch_size": 4, "metric_images": 1},
    "resnet18-cifar10": {"batch_size": 2, "metric_images": 2},
    "digits-autoregression": {"batch_size": 16, "metric_images": 4},
    "uci-protein": {"batch_size": 256},
}
DATA_TASKS = {"mnist-autoregression", "resnet18-cifar10", "uci-energy", "uci-protein", "fashion-mnist-mlp"}
DETERMINISTIC = {"rosenbrock", "rosenbrock-classic"}  # no random source at the default options
# Query pixels are re-drawn on every call, so a same-batch loss is a different example.
REDRAWS_ON_SAME_BATCH = {"mnist-autoregression", "digits-autoregression"}
# Its metrics cost 784 forward passes per image (seconds on 2 cores); digits-autoregression runs the
# same metric code in this suite.
SLOW_METRICS = {"mnist-autoregression"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, writers):
    root = tmp_path_factory.mktemp("data")
    writers.mnist_like(root / "MNIST" / "raw", train=80, test=6)
    writers.mnist_like(root / "FashionMNIST" / "raw", train=60, test=12, seed=1, compress=True)
    writers.cifar_like(root, per_batch=4)
    writers.uci_like(root, "UCI_Energy", 768, 9)
    writers.uci_like(root, "UCI_Protein", 45730, 10)
    return root


@pytest.fixture(scope="module")
def build(data_dir):
    def build(name: str, seed: int = 0, **options):
        options = {**SMALL.get(name, {}), **options}
        if name in DATA_TASKS:
            options["data_dir"] = data_dir
        return tasks.build(name, seed=seed, **options)

    return build


def sgd_losses(task, steps: int, *, metrics_at: int | None = None) -> list[float]:
    """Training losses of ``steps`` SGD steps (lr small enough to stay finite everywhere)."""
    optimizer = torch.optim.SGD(task.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        if step == metrics_at:
            task.metrics()
        optimizer.zero_grad()
        loss = task.train_loss()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_protocol_and_parameters(build, name):
    task = build(name)
    assert isinstance(task, tasks.Task)
    assert task.name == name
    described = next(entry for entry in tasks.describe() if entry["name"] == name)
    assert task.num_parameters == described["num_parameters"] == sum(p.numel() for p in task.parameters())
    assert [id(p) for p in task.parameters()] == [id(p) for p in task.model.parameters()]
    assert task.device == torch.device("cpu")
    assert all(p.device == task.device and p.dtype == task.dtype for p in task.parameters())
    loss = task.train_loss()
    assert loss.shape == () and loss.requires_grad and math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in task.parameters())
    if name in SLOW_METRICS:
        return
    metrics = task.metrics()
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_same_seed_same_sequence_other_seed_other(build, name):
    first = sgd_losses(build(name, seed=3), 3)
    assert sgd_losses(build(name, seed=3), 3) == first
    other = sgd_losses(build(name, seed=4), 3)
    if name in DETERMINISTIC:
        assert other == first
    else:
        assert other != first


def test_classic_rosenbrock_random_start_follows_the_seed(build):
    starts = [build("rosenbrock-classic", seed=s, start="random").model.x.tolist() for s in (1, 1, 2)]
    assert starts[0] == starts[1] != starts[2]


@pytest.mark.parametrize("name", sorted(set(tasks.TASK_NAMES) - SLOW_METRICS))
def test_metrics_do_not_disturb_training(build, name):
    assert sgd_losses(build(name), 4, metrics_at=2) == sgd_losses(build(name), 4)


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_same_batch_loss(build, name):
    task = build(name)
    fresh = task.train_loss().item()
    again = [task.same_batch_loss().item() for _ in range(3)]
    if name in REDRAWS_ON_SAME_BATCH:
        assert task._batch is not None and len({*again, fresh}) > 1
    else:
        assert again == [fresh] * 3


@pytest.mark.parametrize("name", sorted(DATA_TASKS | {"digits-autoregression", "digits-mlp"}))
def test_same_batch_before_any_batch_is_an_error(build, name):
    with pytest.raises(RuntimeError, match="before any train_loss"):
        build(name).same_batch_loss()


def test_same_batch_keeps_the_autoregression_images(build):
    task = build("digits-autoregression")
    task.train_loss()
    images = task._batch.clone()
    task.same_batch_loss()
    assert torch.equal(task._batch, images)
    task.train_loss()
    assert not torch.equal(task._batch, images)
