"""The autoregression CNN family (lodo.md §4.3, §7.14) against independent computations."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tasks
from tasks.autoregression import (
    AutoregressiveCNN,
    DepthwiseConv2d,
    QueryInputs,
    sample_images,
    write_image_grid,
)


def naive_inputs(image: np.ndarray, r: int, c: int, levels: int) -> np.ndarray:
    """The five channels of lodo.md §4.3 for one image, pixel by pixel."""
    size = image.shape[0]
    out = np.zeros((5, size, size))
    for row in range(size):
        for col in range(size):
            visible = row < r or (row == r and col < c)
            out[0, row, col] = image[row, col] * visible / levels
            out[1, row, col] = 1.0 if col <= c else -1.0
            out[2, row, col] = 1.0 if visible else -1.0
            out[3, row, col] = row / size * 2 - 1
            out[4, row, col] = col / size * 2 - 1
    return out


@pytest.fixture(scope="module")
def digits_task():
    return tasks.build("digits-autoregression", seed=0, batch_size=16, metric_images=3)


def test_inputs_match_the_specification():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    queries = [(0, 0), (3, 5), (27, 27)]
    builder = QueryInputs(28, 256, torch.device("cpu"), torch.float64)
    rows = torch.tensor([q[0] for q in queries])
    cols = torch.tensor([q[1] for q in queries])
    built = builder(torch.from_numpy(images), rows, cols).numpy()
    for index, (r, c) in enumerate(queries):
        assert np.array_equal(built[index], naive_inputs(images[index], r, c, 256))
    assert QueryInputs.targets(torch.from_numpy(images), rows, cols).tolist() == [
        images[i, r, c] for i, (r, c) in enumerate(queries)
    ]


def test_pooling_stages_reach_one_pixel_with_ceil_mode():
    sizes = []
    model = AutoregressiveCNN(size=28, levels=256)
    for stage in model.stages:
        stage.register_forward_hook(lambda module, args, out: sizes.append(out.shape[-1]))
    model(torch.zeros(1, 5, 28, 28))
    assert sizes == [28, 14, 7, 4, 2]
    # TF "SAME" average pooling leaves padded cells out: a lone edge cell keeps its value.
    image = torch.arange(49.0).view(1, 1, 7, 7)
    pooled = F.avg_pool2d(image, 2, 2, ceil_mode=True)
    assert pooled.shape[-1] == 4 and pooled[0, 0, 3, 3] == 48.0 and pooled[0, 0, 3, 0] == (42 + 43) / 2


def test_depthwise_multiplier_layout_and_cpu_path():
    conv = DepthwiseConv2d(40, 3)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(conv.bias, generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 40, 7, 7, generator=torch.Generator().manual_seed(2), requires_grad=True)
    repeated = conv(x)
    conv.repeat_on_cpu = False
    grouped = conv(x)
    assert torch.allclose(repeated, grouped, atol=1e-5)
    assert torch.allclose(grouped, F.conv2d(x, conv.weight, conv.bias, padding=1, groups=40))
    cotangent = torch.randn_like(grouped)
    assert all(
        torch.allclose(a, b, atol=1e-4)
        for a, b in zip(
            torch.autograd.grad(repeated, (x, conv.weight, conv.bias), cotangent),
            torch.autograd.grad(grouped, (x, conv.weight, conv.bias), cotangent),
            strict=True,
        )
    )
    conv.repeat_on_cpu = True
    # Output channel in·3 + k reads input channel `in` only.
    only_channel_1 = torch.zeros_like(x)
    only_channel_1[:, 1] = 1.0
    response = conv(only_channel_1) - conv.bias.view(1, -1, 1, 1)
    assert torch.nonzero(response.abs().sum(dim=(0, 2, 3))).flatten().tolist() == [3, 4, 5]


def test_initialisation_std_is_one_over_sqrt_fan_in_plus_one():
    task = tasks.build("digits-autoregression", seed=11, batch_size=4)
    pooled: dict[float, list[torch.Tensor]] = {}
    for module in task.model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            std = 1 / math.sqrt(module.weight[0].numel() + 1)
            pooled.setdefault(std, []).extend([module.weight.flatten(), module.bias.flatten()])
    assert sorted(pooled) == sorted(1 / math.sqrt(k + 1) for k in (5, 20, 9, 120))
    for std, pieces in pooled.items():
        values = torch.cat(pieces)
        assert values.std().item() == pytest.approx(std, rel=0.1), std
        assert values.mean().abs().item() < 0.2 * std


def test_metric_is_mean_cross_entropy_over_every_position(digits_task):
    model, levels = digits_task.model, digits_task.levels
    images = digits_task.validation_images.numpy()
    losses = []
    with torch.no_grad():
        for image in images:
            inputs = np.stack([naive_inputs(image, r, c, levels) for r in range(8) for c in range(8)])
            logits = model(torch.from_numpy(inputs).float())
            losses.append(
                F.cross_entropy(logits, torch.from_numpy(image.reshape(-1)).long(), reduction="none")
            )
    expected = torch.cat(losses).double().mean().item()
    assert digits_task.metrics()["validation_loss"] == pytest.approx(expected, rel=1e-5)


def test_mnist_task_on_idx_files(tmp_path, writers):
    arrays = writers.mnist_like(tmp_path / "MNIST" / "raw", train=70, test=5, compress=True)
    task = tasks.build("mnist-autoregression", seed=0, data_dir=tmp_path, batch_size=8, metric_images=1)
    assert task.num_parameters == 94_696 and task.levels == 256
    assert torch.equal(task.train_images, torch.from_numpy(arrays["train-images-idx3-ubyte"][:6]))
    assert torch.equal(task.validation_images[0], torch.from_numpy(arrays["train-images-idx3-ubyte"][6]))
    assert task.test_images.shape == (1, 28, 28)
    loss = task.train_loss()
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0


def test_sampler_is_seeded_and_in_range(digits_task):
    first = sample_images(digits_task, 6, seed=1)
    assert first.shape == (6, 8, 8) and first.dtype == torch.uint8 and int(first.max()) <= 16
    assert torch.equal(sample_images(digits_task, 6, seed=1), first)
    assert not torch.equal(sample_images(digits_task, 6, seed=2), first)


def test_sampler_follows_the_softmax():
    task = tasks.build("digits-autoregression", seed=0, batch_size=4)
    with torch.no_grad():
        task.model.head.weight.zero_()
        task.model.head.bias.fill_(-1e4)
        task.model.head.bias[5] = 0.0
    assert (sample_images(task, 3, seed=0) == 5).all()
    with torch.no_grad():
        task.model.head.bias.fill_(0.0)  # uniform: every level appears over 3 × 64 draws
    assert len(torch.unique(sample_images(task, 3, seed=0))) == 17


def test_image_grid_png(tmp_path):
    images = np.random.default_rng(0).integers(0, 17, (5, 8, 8))
    path = write_image_grid(images, tmp_path / "grid.png", levels=17, scale=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = matplotlib.image.imread(path)
    # 3 columns × 2 rows of 8×8 images with 1-pixel gaps, each pixel drawn 2×2.
    assert picture.shape[:2] == ((2 * 9 + 1) * 2, (3 * 9 + 1) * 2)
