"""Fashion-MNIST classification with an MLP 784-50-10 (AdamQLR and one-pass papers; clarke.md §3).

Data: the Fashion-MNIST IDX files (:mod:`tasks.idx`). The 60,000 training images split into
50,000 train and 10,000 validation (1/6, the last ones); test = the 10,000 test images. Flat
784-pixel inputs standardised per pixel with the statistics of all 60,000; softmax cross-entropy;
batch 50 (the code's dataset config).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tasks import supervised
from tasks._data import resolve_data_dir
from tasks._spec import DATA_DIR, Option, TaskSpec, positive_int
from tasks.idx import FASHION_MNIST_SOURCE, load_split

NAME = "fashion-mnist-mlp"
SIZES = (784, 50, 10)
VALIDATION_PROPORTION = 1 / 6


def build(
    *, seed: int, device: torch.device, dtype: torch.dtype, batch_size: int, data_dir: Path | None
) -> supervised.SupervisedTask:
    directory = resolve_data_dir(data_dir) / "FashionMNIST" / "raw"
    train = load_split(directory, "train", what="Fashion-MNIST", source=FASHION_MNIST_SOURCE)
    test = load_split(directory, "t10k", what="Fashion-MNIST", source=FASHION_MNIST_SOURCE)

    def flat(split):
        images, labels = split
        return images.reshape(len(images), -1).astype(float), labels

    data, _ = supervised.prepare(
        flat(train), flat(test), validation_proportion=VALIDATION_PROPORTION, standardize_targets=False
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
    description="AdamQLR's Fashion-MNIST: MLP 784-50-10 (ReLU), softmax CE, 50k/10k/10k split, batch 50.",
    dtype=torch.float32,
    options=(Option("batch_size", 50, "examples per minibatch", positive_int), DATA_DIR),
    build=build,
    count_parameters=lambda **_: supervised.count_mlp_parameters(SIZES),
)
