"""Regression of scikit-learn's diabetes progression with an MLP 10-50-1: ``uci-energy`` on data
that ships offline.

Same recipe as :mod:`tasks.uci_energy` (clarke.md §3): inputs and target standardised with
train + validation statistics, Haiku-initialised MLP with one hidden layer of 50 ReLU units, ½·MSE,
full batch by default. Data: the 442 patients of Efron et al. (2004) in scikit-learn's package
(``load_diabetes(scaled=False)``: age, sex, BMI, blood pressure and six serum measurements; the
target is disease progression a year later), in one fixed row order (NumPy's ``default_rng(0)``
permutation, the same for every seed as the AdamQLR code's UCI permutation is): the first 398 rows
train (338) and validate (60, 15 % as Energy), the last 44 test. 601 parameters.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tasks import supervised
from tasks._spec import Option, TaskSpec, positive_int

NAME = "diabetes-mlp"
SIZES = (10, 50, 1)
ROWS, TEST = 442, 44
VALIDATION_PROPORTION = 0.15
TRAIN = supervised.split_train_validation(ROWS - TEST, VALIDATION_PROPORTION)


@functools.cache
def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Features ``(442, 10)`` and targets ``(442, 1)`` (float64, read-only) in the fixed row order;
    read once per process (a GA generation builds one task per member)."""
    from sklearn.datasets import load_diabetes as sklearn_load_diabetes  # a second to import

    bunch = sklearn_load_diabetes(scaled=False)
    order = np.random.default_rng(0).permutation(ROWS)
    x, y = bunch.data[order].astype(float), bunch.target[order].astype(float).reshape(-1, 1)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def build(
    *, seed: int, device: torch.device, dtype: torch.dtype, batch_size: int
) -> supervised.SupervisedTask:
    x, y = load_diabetes()
    return supervised.regression_task(
        NAME,
        SIZES,
        (x[:-TEST], y[:-TEST]),
        (x[-TEST:], y[-TEST:]),
        validation_proportion=VALIDATION_PROPORTION,
        seed=seed,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


SPEC = TaskSpec(
    name=NAME,
    description=(
        "MLP 10-50-1 (ReLU), ½·MSE on scikit-learn's standardised diabetes progression, 338/60/44, "
        "full batch; offline."
    ),
    dtype=torch.float32,
    options=(Option("batch_size", TRAIN, f"examples per minibatch ({TRAIN} = full batch)", positive_int),),
    build=build,
    count_parameters=lambda **_: supervised.count_mlp_parameters(SIZES),
    stands_in_for="uci-energy (the AdamQLR / one-pass UCI regression MLP, on data that ships offline)",
)
