"""Autoregressive generation of scikit-learn's 8×8 digits: ``mnist-autoregression`` scaled down.

Same model family and protocol as :mod:`tasks.mnist_autoregression` (LODO §4.3): the same input
channels, residual blocks (20 → 40 → depthwise ×3 → 20, atan), 4 blocks per stage and ceil-mode
pooling until 1×1 — which takes 3 stages at 8×8 (8 → 4 → 2 → 1) instead of 5 — and a dense head
over the 17 intensity levels 0..16 (the classes; channel 1 divides by 17 where MNIST divides by
256). 53,997 parameters. Batch 256 with replacement, query pixel re-drawn on every call. Data:
:mod:`tasks.digits` (1,437 train / 180 validation / 180 test); metrics over all 64 positions.
"""

from __future__ import annotations

import torch

from tasks import autoregression
from tasks._spec import TaskSpec
from tasks.digits import LEVELS, load_digits

NAME = "digits-autoregression"
SIZE = 8


def build(
    *,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    metric_images: int | None,
    compile: bool,
) -> autoregression.AutoregressionTask:
    digits = load_digits()
    return autoregression.AutoregressionTask(
        name=NAME,
        seed=seed,
        device=device,
        dtype=dtype,
        train_images=digits.train_images,
        validation_images=digits.validation_images,
        test_images=digits.test_images,
        levels=LEVELS,
        batch_size=batch_size,
        metric_images=metric_images,
        compile=compile,
    )


SPEC = TaskSpec(
    name=NAME,
    description=(
        "The §4.3 autoregression task on scikit-learn's 8×8 digits (17 intensity classes): same CNN family "
        "with 3 pooling stages, batch 256; metrics over all 64 positions. Runs offline on real data."
    ),
    dtype=torch.float32,
    options=autoregression.options(batch_size=256),
    build=build,
    count_parameters=lambda **_: autoregression.count_parameters(size=SIZE, levels=LEVELS),
    stands_in_for="mnist-autoregression (same model family and protocol, at 8×8, on data that ships offline)",
)
