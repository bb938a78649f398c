"""Reader of the CIFAR-10 "python version" batches.

Layout (what ``cifar-10-python.tar.gz`` extracts to, also torchvision's)::

    <data_dir>/cifar-10-batches-py/data_batch_{1..5}, test_batch

Each batch is a pickled dict with ``data`` (uint8, ``(N, 3072)``, rows of 1024 red, 1024 green,
1024 blue values in raster order) and ``labels`` (N ints in 0..9); the official files were
written by Python 2, so keys are bytes. Unpickling runs code named by the file, so only the
globals an array needs are allowed (numpy's array reconstruction, ``_codecs.encode``): a file with
anything else is rejected as malformed instead of executed.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from tasks._data import first_existing, malformed

CIFAR10_SOURCE = (
    "The official copy is https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz; extract it into "
    "<data_dir> (it creates cifar-10-batches-py/)"
)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected pickled global {module}.{name}")
        if module.startswith("numpy.core"):
            # NumPy 2 moved numpy.core to numpy._core (the old name warns); the official files use
            # the old name.
            try:
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
            except ImportError:
                pass
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch file."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise malformed(path, f"not a CIFAR-10 python batch ({error})") from error
    if not isinstance(batch, dict):
        raise malformed(path, f"unpickles to {type(batch).__name__}, expected a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise malformed(path, f"keys {sorted(map(str, batch))}, expected 'data' and 'labels'")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise malformed(path, f"data of shape {shape} and dtype {dtype}, expected (N, 3072) uint8")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise malformed(path, f"labels of shape {labels.shape} for {len(data)} images, expected integers")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise malformed(path, f"labels in {labels.min()}..{labels.max()}, expected 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, train labels (the five data batches, in order), test images, test labels."""
    directory = data_dir / "cifar-10-batches-py"

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = first_existing([directory / name], what=f"CIFAR-10 {name}", source=CIFAR10_SOURCE)
        return read_batch(path)

    train = [batch(name) for name in TRAIN_BATCHES]
    test_images, test_labels = batch(TEST_BATCH)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return train_images, train_labels, test_images, test_labels
