"""Reader of scikit-learn's 8×8 handwritten digits (``sklearn.datasets.load_digits``).

The dataset ships inside scikit-learn (UCI "Optical Recognition of Handwritten Digits", test
part: 1,797 images of 8×8 pixels with intensities 0..16), so the tasks built on it run offline
with real data. Split, fixed for every seed as the MNIST split of the paper is: the first 1,437
images train, the next 180 validate, the last 180 test (classes are balanced in each part).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

LEVELS = 17
TRAIN, VALIDATION, TEST = 1437, 180, 180


@dataclass(frozen=True)
class Digits:
    """Images ``(N, 8, 8)`` uint8 in 0..16 and labels ``(N,)`` int64, per split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_digits() -> Digits:
    """The three splits of the digits (read from scikit-learn's package data), the caller's own copy."""
    images, labels = _read_digits()
    images, labels = images.copy(), labels.copy()
    a, b = TRAIN, TRAIN + VALIDATION
    return Digits(images[:a], labels[:a], images[a:b], labels[a:b], images[b:], labels[b:])


@functools.cache
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Read once per process: a GA generation builds one task per member, and scikit-learn parses
    its compressed CSV anew on each call (~0.1 s)."""
    from sklearn.datasets import load_digits as sklearn_load_digits  # a second to import: only on use

    bunch = sklearn_load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)
