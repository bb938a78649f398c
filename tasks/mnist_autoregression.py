"""Autoregressive MNIST image generation (LODO paper §4.3; lodo.md §4.3), exactly the code's setup.

Data: the MNIST IDX files (:mod:`tasks.idx`). Training pool = the first 59,936 training images,
validation = the last 64, test = the 10,000 test images; pixel values 0..255 are the 256 classes.
Batch 256 with replacement; the model and inputs are in :mod:`tasks.autoregression`
(94,696 parameters). The paper computes inputs in float64; here the task's dtype (float32 by
default) is used throughout.

The metrics are expensive: the paper's test loss is 10,000 images × 784 positions (7.8 M forward
examples; it computed it once, from saved checkpoints). ``metric_images`` caps both sets.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tasks import autoregression
from tasks._data import malformed, resolve_data_dir
from tasks._spec import DATA_DIR, TaskSpec
from tasks.idx import MNIST_SOURCE, load_images

NAME = "mnist-autoregression"
SIZE, LEVELS, VALIDATION_IMAGES = 28, 256, 64


def build(
    *,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    metric_images: int | None,
    compile: bool,
    data_dir: Path | None,
) -> autoregression.AutoregressionTask:
    directory = resolve_data_dir(data_dir) / "MNIST" / "raw"
    train = load_images(directory, "train", what="MNIST", source=MNIST_SOURCE)
    test = load_images(directory, "t10k", what="MNIST", source=MNIST_SOURCE)
    if len(train) <= VALIDATION_IMAGES:
        raise malformed(
            directory / "train-images-idx3-ubyte",
            f"{len(train)} images; the last {VALIDATION_IMAGES} are the validation set, so more are needed",
        )
    return autoregression.AutoregressionTask(
        name=NAME,
        seed=seed,
        device=device,
        dtype=dtype,
        train_images=train[:-VALIDATION_IMAGES],
        validation_images=train[-VALIDATION_IMAGES:],
        test_images=test,
        levels=LEVELS,
        batch_size=batch_size,
        metric_images=metric_images,
        compile=compile,
    )


SPEC = TaskSpec(
    name=NAME,
    description=(
        "LODO §4.3: predict a random query pixel (256 classes) of an MNIST image from the pixels before "
        "it; atan residual CNN, 1×1 stem, depthwise ×3, batch 256; metrics over all 784 positions."
    ),
    dtype=torch.float32,
    options=(*autoregression.options(batch_size=256), DATA_DIR),
    build=build,
    count_parameters=lambda **_: autoregression.count_parameters(size=SIZE, levels=LEVELS),
)
