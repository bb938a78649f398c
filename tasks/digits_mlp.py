"""Classification of scikit-learn's 8×8 digits with an MLP 64-50-10: ``fashion-mnist-mlp`` scaled down.

Same recipe as :mod:`tasks.fashion_mnist_mlp` (clarke.md §3): flat pixel inputs standardised per
pixel with train + validation statistics, Haiku-initialised MLP with one hidden layer of 50 ReLU
units, softmax cross-entropy, batch 50, epoch-wise shuffling. Data: :mod:`tasks.digits`
(1,437 train / 180 validation / 180 test). 3,760 parameters.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks import supervised
from tasks._spec import Option, TaskSpec, positive_int
from tasks.digits import VALIDATION, load_digits

NAME = "digits-mlp"
SIZES = (64, 50, 10)


def build(
    *, seed: int, device: torch.device, dtype: torch.dtype, batch_size: int
) -> supervised.SupervisedTask:
    digits = load_digits()
    x = np.concatenate([digits.train_images, digits.validation_images]).reshape(-1, 64).astype(float)
    y = np.concatenate([digits.train_labels, digits.validation_labels])
    test = (digits.test_images.reshape(-1, 64).astype(float), digits.test_labels)
    data, _ = supervised.prepare(
        (x, y), test, validation_proportion=VALIDATION / len(x), standardize_targets=False
    )
    return supervised.SupervisedTask(
        name=NAME,
        seed=seed,
        device=device,
        dtype=dtype,
        sizes=SIZES,
        data=data,
        classification=True,
        batch_size=batch_size,
    )


SPEC = TaskSpec(
    name=NAME,
    description="MLP 64-50-10 (ReLU) classifying scikit-learn's 8×8 digits, softmax CE, batch 50; offline.",
    dtype=torch.float32,
    options=(Option("batch_size", 50, "examples per minibatch", positive_int),),
    build=build,
    count_parameters=lambda **_: supervised.count_mlp_parameters(SIZES),
    stands_in_for="fashion-mnist-mlp (the AdamQLR / one-pass MLP classifier, on data that ships offline)",
)
