"""Dataset readers on tiny files written in the real formats, and the errors for missing or bad files."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest

import tasks
from tasks import cifar, idx, uci


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, writers, compress):
    arrays = writers.mnist_like(tmp_path, train=7, test=3, compress=compress)
    images, labels = idx.load_split(tmp_path, "train", what="MNIST", source="")
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(labels, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(
        idx.load_images(tmp_path, "t10k", what="MNIST", source=""), arrays["t10k-images-idx3-ubyte"]
    )


def test_idx_header_is_big_endian(tmp_path, writers):
    path = writers.idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8))
    assert path.read_bytes()[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001c")


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (bytes.fromhex("00000801 00000001") + b"\x00", "magic number 0x00000801, expected 0x00000803"),
        (bytes.fromhex("00000c03 00000001 0000001c 0000001c"), "magic number 0x00000c03"),
        (bytes.fromhex("0000"), "shorter than the 4-byte IDX magic number"),
        (bytes.fromhex("00000803 00000001 0000001c"), "shorter than the 16-byte IDX header"),
        (bytes.fromhex("00000803 00000002 0000001c 0000001c") + bytes(784), "needs 1568"),
        (
            bytes.fromhex("00000803 00000001 0000000a 0000000a") + bytes(100),
            "images of size (10, 10), expected (28, 28)",
        ),
    ],
)
def test_malformed_idx_images_name_the_file(tmp_path, payload, problem):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=re.escape(f"Malformed dataset file {path}: ")) as caught:
        idx.read_images(path)
    assert problem in str(caught.value)


def test_idx_label_range_and_count(tmp_path, writers):
    writers.idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    labels = writers.idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 10, 2], np.uint8))
    with pytest.raises(ValueError, match=re.escape(f"{labels}: label 10 outside 0..9")):
        idx.load_split(tmp_path, "train", what="MNIST", source="")
    writers.idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        idx.load_split(tmp_path, "train", what="MNIST", source="")


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=re.escape(f"Malformed dataset file {path}: cannot be read")):
        idx.read_images(path)


def test_missing_mnist_names_the_exact_paths_and_source(tmp_path):
    expected = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError) as caught:
        tasks.build("mnist-autoregression", seed=0, data_dir=tmp_path)
    message = str(caught.value)
    assert f"expected {expected} or {expected}.gz" in message
    assert "http://yann.lecun.com/exdb/mnist/" in message
    assert "LODOTUNE_DATA_DIR" in message and "nothing is downloaded" in message


def test_missing_files_of_every_data_task(tmp_path):
    expected = {
        "fashion-mnist-mlp": (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte", "fashion-mnist"),
        "resnet18-cifar10": (tmp_path / "cifar-10-batches-py" / "data_batch_1", "cifar-10-python.tar.gz"),
        "uci-energy": (
            tmp_path / "UCI_Energy" / "raw" / "data_targets.txt",
            "UCI_Datasets/energy/data/data.txt",
        ),
        "uci-protein": (tmp_path / "UCI_Protein" / "raw" / "data_targets.txt", "protein-tertiary-structure"),
    }
    for name, (path, source) in expected.items():
        with pytest.raises(FileNotFoundError, match=re.escape(f"expected {path}")) as caught:
            tasks.build(name, seed=0, data_dir=tmp_path)
        assert source in str(caught.value)


def test_data_dir_comes_from_the_environment_at_build_time(tmp_path, monkeypatch, writers):
    monkeypatch.setenv("LODOTUNE_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "elsewhere" / "MNIST"))):
        tasks.build("mnist-autoregression", seed=0)
    writers.mnist_like(tmp_path / "elsewhere" / "MNIST" / "raw", train=70, test=2)
    assert tasks.build("mnist-autoregression", seed=0).train_images.shape == (6, 28, 28)
    monkeypatch.delenv("LODOTUNE_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "MNIST"))):
        tasks.build("mnist-autoregression", seed=0)


def test_mnist_needs_more_than_the_validation_images(tmp_path, writers):
    writers.mnist_like(tmp_path / "MNIST" / "raw", train=64, test=2)
    with pytest.raises(ValueError, match="64 images; the last 64 are the validation set"):
        tasks.build("mnist-autoregression", seed=0, data_dir=tmp_path)


def test_cifar_batch_round_trip(tmp_path, writers):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 5)
    path = writers.cifar_batch(tmp_path / "data_batch_1", images, labels)
    read_images, read_labels = cifar.read_batch(path)
    assert np.array_equal(read_images, images) and np.array_equal(read_labels, labels)
    # The row layout: 1024 red values, then green, then blue, each in raster order.
    row = images[2].reshape(3072)
    assert np.array_equal(read_images[2, 1, 0, :], row[1024 : 1024 + 32])


def test_load_cifar10_concatenates_the_five_batches(tmp_path, writers):
    arrays = writers.cifar_like(tmp_path, per_batch=3)
    train_images, train_labels, test_images, test_labels = cifar.load_cifar10(tmp_path)
    assert train_images.shape == (15, 3, 32, 32) and test_images.shape == (3, 3, 32, 32)
    assert np.array_equal(train_images[6:9], arrays["data_batch_3"][0])
    assert np.array_equal(test_labels, arrays["test_batch"][1])
    assert train_labels.dtype == np.int64


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ([1, 2], "unpickles to list, expected a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "expected 'data' and 'labels'"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "expected (N, 3072) uint8"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "expected (N, 3072) uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels of shape (1,) for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels in 0..10, expected 0..9"),
    ],
)
def test_malformed_cifar_batch_names_the_file(tmp_path, batch, problem):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=re.escape(f"Malformed dataset file {path}: ")) as caught:
        cifar.read_batch(path)
    assert problem in str(caught.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_reader_does_not_execute_foreign_pickles(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="unexpected pickled global"):
        cifar.read_batch(path)


def test_uci_reader_applies_the_permutation(tmp_path, writers):
    data, permutation = writers.uci_like(tmp_path, "UCI_Energy", 768, 9)
    features, targets = uci.load_uci(tmp_path, uci.ENERGY)
    assert np.allclose(features, data[permutation, :8], rtol=1e-15)
    assert np.allclose(targets[:, 0], data[permutation, 8], rtol=1e-15)


def test_uci_reader_checks_shape_and_permutation(tmp_path, writers):
    root = tmp_path / "UCI_Energy"
    writers.uci_like(tmp_path, "UCI_Energy", 767, 9)
    with pytest.raises(ValueError, match=re.escape(f"{root / 'raw' / 'data_targets.txt'}: shape (767, 9)")):
        uci.load_uci(tmp_path, uci.ENERGY)
    writers.uci_like(tmp_path, "UCI_Energy", 768, 9)
    np.savetxt(root / "permutation_indices.txt", np.zeros(768, int), fmt="%i")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'permutation_indices.txt'}: not a permutation")):
        uci.load_uci(tmp_path, uci.ENERGY)
    (root / "permutation_indices.txt").unlink()
    with pytest.raises(FileNotFoundError, match="AdamThroughASecondOrderLens"):
        uci.load_uci(tmp_path, uci.ENERGY)
    np.savetxt(root / "permutation_indices.txt", np.arange(768), fmt="%i")
    (root / "raw" / "data_targets.txt").write_text("1 2 three\n")
    with pytest.raises(ValueError, match="not whitespace-separated numbers"):
        uci.load_uci(tmp_path, uci.ENERGY)


def test_uci_files_are_parsed_once_per_version(tmp_path, writers, monkeypatch):
    data, permutation = writers.uci_like(tmp_path, "UCI_Energy", 768, 9)
    calls = []
    loadtxt = np.loadtxt
    monkeypatch.setattr(np, "loadtxt", lambda *a, **kw: calls.append(a[0]) or loadtxt(*a, **kw))
    first = uci.load_uci(tmp_path, uci.ENERGY)
    second = uci.load_uci(tmp_path, uci.ENERGY)
    assert len(calls) == 2  # the data and the permutation, once
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    first[0][0, 0] = 1e9  # what a caller gets is its own copy
    assert uci.load_uci(tmp_path, uci.ENERGY)[0][0, 0] == pytest.approx(data[permutation[0], 0], rel=1e-15)
    changed = data.copy()
    changed[:, 8] += 1.0
    np.savetxt(tmp_path / "UCI_Energy" / "raw" / "data_targets.txt", changed)  # a new version of the file
    _, targets = uci.load_uci(tmp_path, uci.ENERGY)
    assert len(calls) == 3
    assert np.allclose(targets[:, 0], changed[permutation, 8], rtol=1e-15)
