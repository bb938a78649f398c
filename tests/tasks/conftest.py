"""Writers of tiny dataset files in the real on-disk formats (IDX, CIFAR-10 python batches, UCI text).

Each writer is independent of the readers under test: it follows the published format
descriptions (yann.lecun.com/exdb/mnist, cs.toronto.edu/~kriz/cifar.html, Gal's UCI files).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """An unsigned-byte IDX file: 0x00 0x00 0x08 ndim, big-endian int32 dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist_like(
    directory: Path, *, train: int, test: int, seed: int = 0, compress: bool = False
) -> dict:
    """The four MNIST files with random images and labels; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, compress=compress)
    return arrays


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A CIFAR-10 python batch: a protocol-2 pickle of a dict with bytes keys, like the official files."""
    batch = {
        b"batch_label": b"testing batch",
        b"labels": [int(label) for label in labels],
        b"data": np.ascontiguousarray(images.reshape(len(images), 3072), dtype=np.uint8),
        b"filenames": [b"image_%d.png" % i for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


def write_cifar_like(data_dir: Path, *, per_batch: int, seed: int = 0) -> dict:
    """All six CIFAR-10 batch files with random content; returns the arrays (N, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        write_cifar_batch(data_dir / "cifar-10-batches-py" / name, images, labels)
        arrays[name] = (images, labels)
    return arrays


def write_uci_like(data_dir: Path, directory: str, rows: int, columns: int, seed: int = 0) -> tuple:
    """``raw/data_targets.txt`` and ``permutation_indices.txt``; returns (data, permutation)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, columns)) * rng.uniform(1, 10, columns) + rng.uniform(-5, 5, columns)
    permutation = rng.permutation(rows)
    root = data_dir / directory
    (root / "raw").mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "raw" / "data_targets.txt", data)
    np.savetxt(root / "permutation_indices.txt", permutation, fmt="%i")
    return data, permutation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this directory's tests on one intra-op thread, restoring the setting after each module.

    The tensors here are tiny: with two OpenMP threads on a busy 2-core machine every small op
    can wait a scheduler slice at a barrier, which made the suite ten times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def writers():
    """The writers above, for tests that need files in the real formats."""

    class Writers:
        idx = staticmethod(write_idx)
        mnist_like = staticmethod(write_mnist_like)
        cifar_batch = staticmethod(write_cifar_batch)
        cifar_like = staticmethod(write_cifar_like)
        uci_like = staticmethod(write_uci_like)

    return Writers
