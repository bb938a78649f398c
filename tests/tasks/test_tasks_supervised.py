"""The MLP tasks (clarke.md §3): splits, standardisation, losses and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tasks
from tasks.supervised import split_train_validation


def test_split_sizes_of_the_adamqlr_code():
    assert split_train_validation(692, 0.15) == 588  # Energy: 588 / 104, test 76
    assert split_train_validation(41157, 0.15) == 34983  # Protein: 34983 / 6174, test 4573
    assert split_train_validation(60000, 1 / 6) == 50000  # Fashion-MNIST: 50000 / 10000


def test_uci_energy_splits_and_standardisation(tmp_path, writers):
    data, permutation = writers.uci_like(tmp_path, "UCI_Energy", 768, 9)
    task = tasks.build("uci-energy", seed=0, data_dir=tmp_path)
    (x_train, y_train), (x_val, _), (x_test, _) = task.train_set, task.validation_set, task.test_set
    assert (len(x_train), len(x_val), len(x_test)) == (588, 104, 76)
    permuted = data[permutation]
    train_val = permuted[:692]
    expected_test = (permuted[-76:, :8] - train_val[:, :8].mean(0)) / train_val[:, :8].std(0)
    assert np.allclose(x_test.numpy(), expected_test, atol=1e-5)
    inputs = torch.cat([x_train, x_val]).double()
    assert torch.allclose(inputs.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(inputs.std(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-6)
    target_std = train_val[:, 8].std()
    assert task.target_std == pytest.approx(target_std)
    loss = task.train_loss()  # full batch: the whole training set
    with torch.no_grad():
        expected = 0.5 * F.mse_loss(task.model(x_train), y_train)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    metrics = task.metrics()
    assert set(metrics) == {"validation_loss", "validation_mse", "test_loss", "test_mse"}
    with torch.no_grad():
        expected_validation = 0.5 * F.mse_loss(task.model(x_val), task.validation_set[1])
    validation = task.validation_loss()
    assert validation.requires_grad
    assert validation.item() == pytest.approx(expected_validation.item(), rel=1e-6)
    assert validation.item() == pytest.approx(metrics["validation_loss"], rel=1e-6)
    assert metrics["test_mse"] == pytest.approx(2 * metrics["test_loss"] * target_std**2, rel=1e-5)


def test_fashion_mnist_split_and_standardisation(tmp_path, writers):
    arrays = writers.mnist_like(tmp_path / "FashionMNIST" / "raw", train=60, test=7)
    task = tasks.build("fashion-mnist-mlp", seed=0, data_dir=tmp_path, batch_size=16)
    assert (len(task.train_set[0]), len(task.validation_set[0]), len(task.test_set[0])) == (50, 10, 7)
    pixels = arrays["train-images-idx3-ubyte"].reshape(60, 784).astype(float)
    expected = (pixels[55] - pixels.mean(0)) / pixels.std(0)
    assert np.allclose(task.validation_set[0][5].numpy(), expected, atol=1e-5)
    assert torch.equal(task.test_set[1], torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    metrics = task.metrics()
    assert set(metrics) == {"validation_loss", "validation_accuracy", "test_loss", "test_accuracy"}
    assert 0 <= metrics["test_accuracy"] <= 1


def test_digits_mlp_epochs_cover_the_training_set():
    task = tasks.build("digits-mlp", seed=0)
    assert (len(task.train_set[0]), len(task.validation_set[0]), len(task.test_set[0])) == (1437, 180, 180)
    seen = []
    for _ in range(math.ceil(1437 / 50)):
        task.train_loss()
        seen.extend(task._batch.tolist())
    assert sorted(seen) == list(range(1437))


def test_haiku_initialisation():
    task = tasks.build("digits-mlp", seed=3)
    first, second = task.model.layers
    for layer in (first, second):
        bound = 2 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max().item() <= bound
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    # A normal truncated at ±2σ has std 0.8796σ.
    assert first.weight.std().item() == pytest.approx(0.8796 / 8, rel=0.05)


def test_diabetes_mlp_split_and_units_against_numpy():
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    order = np.random.default_rng(0).permutation(442)
    x, y = bunch.data[order], bunch.target[order].reshape(-1, 1)
    task = tasks.build("diabetes-mlp", seed=0, dtype="float64")
    assert (len(task.train_set[0]), len(task.validation_set[0]), len(task.test_set[0])) == (338, 60, 44)
    assert task.batch_size == 338  # full batch, as uci-energy's 588
    mean, std = x[:398].mean(axis=0), x[:398].std(axis=0)
    np.testing.assert_allclose(task.test_set[0].cpu().numpy(), (x[398:] - mean) / std, rtol=1e-12)
    assert task.target_std == pytest.approx(y[:398].std())
    metrics = task.metrics()
    # test MSE in the progression's own units: ½·MSE standardised × 2σ²
    assert metrics["test_mse"] == pytest.approx(2 * metrics["test_loss"] * y[:398].std() ** 2, rel=1e-9)
