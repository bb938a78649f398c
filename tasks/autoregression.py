"""Autoregressive image modelling with the LODO paper's CNN (LODO §4.3; lodo.md §4.3 and §7.14).

One example is (image, query pixel (r, c)): the network sees the pixels before (r, c) in raster
order and predicts the value of (r, c) as one of ``levels`` classes. Input channels, in order:

1. image × visible / levels, visible = [row < r] or [row = r and col < c];
2. column indicator: +1 where col ≤ c, −1 elsewhere (all rows);
3. visible × 2 − 1;
4. row / size · 2 − 1;
5. col / size · 2 − 1.

Network (the authors' code, which alone matches the paper's parameter count; the paper text says
a 3×3 first layer with a residual connection and LeCun-normal init): a 1×1 conv 5→20; stages of 4
residual blocks, each x + conv1×1(atan(depthwise3×3×3(atan(conv1×1 20→40(x))))) with 120 → 20 on
the way back, every stage followed by 2×2 average pooling with ceil mode (TF "SAME": padded cells
are left out of the average), until the image is 1×1; a dense 20→levels head; biases everywhere.
Every weight and bias starts i.i.d. N(0, 1/(fan_in + 1)). Tensors are in PyTorch layout
(out, in, kh, kw), not TF's (kh, kw, in, out); the module order is the code's flattening order.

:func:`sample_images` draws images pixel by pixel (inverse CDF of the softmax, as in the paper's
Figure 10) and :func:`write_image_grid` writes them as a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks._rng import torch_generator
from tasks._spec import Option, boolean, count_module_parameters, optional_positive_int, positive_int
from tasks.base import OutputBatch, Preconditioner

INPUT_CHANNELS = 5
# Largest image (pixels) on which the CPU depthwise convolution repeats its input (see DepthwiseConv2d).
_REPEAT_MAX_PIXELS = 64
# Pixel positions per metric forward pass. On the CPU small chunks stay in cache (≈ 15 MB per
# activation at float32) and were faster than large ones; a GPU wants large ones (≈ 1 GB).
_EVAL_PIXELS = {"cpu": 2**15}
_EVAL_PIXELS_DEFAULT = 2**21


class DepthwiseConv2d(nn.Conv2d):
    """3×3 depthwise convolution with a channel multiplier (output channel = in · multiplier + k).

    On the CPU, for images of at most 8×8 pixels, it runs as a pure depthwise convolution
    (groups = out channels) of the input with each channel repeated ``multiplier`` times: the same
    function and parameters, but oneDNN's grouped kernel with a multiplier is 1.6-7× slower than
    that at these sizes (batch 256, forward + backward; at 14×14 and 28×28 the two are within
    ±15 %). The digits step is 1.6× faster for it (``bench/task_steps.py``). CUDA keeps the grouped kernel.
    """

    def __init__(self, channels: int, multiplier: int) -> None:
        super().__init__(channels, channels * multiplier, 3, padding=1, groups=channels)
        self.multiplier = multiplier
        self.repeat_on_cpu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not self.repeat_on_cpu or x.shape[-1] * x.shape[-2] > _REPEAT_MAX_PIXELS:
            return super().forward(x)
        repeated = x.repeat_interleave(self.multiplier, dim=1)
        return F.conv2d(repeated, self.weight, self.bias, padding=1, groups=self.out_channels)


class ResidualBlock(nn.Module):
    """x + conv1×1(atan(depthwise(atan(conv1×1(x))))); depthwise output channel = in · multiplier + k."""

    def __init__(self, width: int = 20, expanded: int = 40, multiplier: int = 3) -> None:
        super().__init__()
        self.expand = nn.Conv2d(width, expanded, 1)
        self.depthwise = DepthwiseConv2d(expanded, multiplier)
        self.project = nn.Conv2d(expanded * multiplier, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(torch.atan(self.depthwise(torch.atan(self.expand(x)))))


def stages_for(size: int) -> int:
    """Number of pool-by-2 stages that bring ``size`` down to 1 with ceil mode (28 → 5, 8 → 3)."""
    return math.ceil(math.log2(size))


class AutoregressiveCNN(nn.Module):
    """The paper's network for ``size``×``size`` images with ``levels`` intensity classes."""

    def __init__(self, *, size: int, levels: int, blocks: int = 4, width: int = 20) -> None:
        super().__init__()
        self.stem = nn.Conv2d(INPUT_CHANNELS, width, 1)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(width) for _ in range(blocks))) for _ in range(stages_for(size))
        )
        self.head = nn.Linear(width, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = F.avg_pool2d(stage(x), 2, 2, ceil_mode=True)
        return self.head(x.flatten(1))


def initialize(model: nn.Module, generator: torch.Generator) -> None:
    """Every weight and bias i.i.d. N(0, 1/(fan_in + 1)), fan_in = inputs feeding one output."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                std = 1.0 / math.sqrt(module.weight[0].numel() + 1)
                module.weight.normal_(0.0, std, generator=generator)
                module.bias.normal_(0.0, std, generator=generator)


class QueryInputs:
    """Builds the 5-channel inputs and targets for (image, query pixel) pairs, vectorized on device."""

    def __init__(self, size: int, levels: int, device: torch.device, dtype: torch.dtype) -> None:
        self.size, self.levels, self.dtype = size, levels, dtype
        row, col = torch.meshgrid(
            torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij"
        )
        self.raster = row * size + col
        self.col = col
        self.row_channel = (row.to(dtype) / size * 2 - 1).expand(1, size, size)
        self.col_channel = (col.to(dtype) / size * 2 - 1).expand(1, size, size)

    def __call__(self, images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Inputs (B, 5, size, size) for images (B, size, size) and queries rows, cols (B,)."""
        batch = len(images)
        query = (rows * self.size + cols).view(-1, 1, 1)
        visible = (self.raster < query).to(self.dtype)
        column = (self.col <= cols.view(-1, 1, 1)).to(self.dtype) * 2 - 1
        channels = (
            images.to(self.dtype) * visible / self.levels,
            column,
            visible * 2 - 1,
            self.row_channel.expand(batch, -1, -1),
            self.col_channel.expand(batch, -1, -1),
        )
        return torch.stack(channels, dim=1)

    @staticmethod
    def targets(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return images[torch.arange(len(images), device=images.device), rows, cols].long()


class AutoregressionTask:
    """A seeded instance; metrics ``validation_loss`` and ``test_loss`` (mean CE over every image of
    the set × every query position, first ``metric_images`` images of each set when given).

    :meth:`train_loss` draws ``batch_size`` images uniformly with replacement and one query pixel
    per image; :meth:`same_batch_loss` keeps the images and re-draws the query pixels (the code
    re-samples them on every call).
    """

    def __init__(
        self,
        *,
        name: str,
        seed: int,
        device: torch.device,
        dtype: torch.dtype,
        train_images: np.ndarray,
        validation_images: np.ndarray,
        test_images: np.ndarray,
        levels: int,
        batch_size: int,
        metric_images: int | None,
        compile: bool,
    ) -> None:
        self.name = name
        self.device, self.dtype = device, dtype
        self.levels = levels
        self.size = train_images.shape[-1]
        self.batch_size = batch_size
        with torch.device("meta"):
            model = AutoregressiveCNN(size=self.size, levels=levels)
        self.model = model.to_empty(device="cpu").to(dtype)
        initialize(self.model, torch_generator(seed, "init"))
        self.model.to(device)
        self.inputs = QueryInputs(self.size, levels, device, dtype)
        self.train_images = torch.from_numpy(train_images).to(device)
        self.validation_images = torch.from_numpy(validation_images[:metric_images]).to(device)
        self.test_images = torch.from_numpy(test_images[:metric_images]).to(device)
        self._images_generator = torch_generator(seed, "images")
        self._query_generator = torch_generator(seed, "queries")
        self._batch: torch.Tensor | None = None
        self._batch_loss = (
            torch.compile(self._eager_batch_loss, dynamic=False) if compile else self._eager_batch_loss
        )

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def _eager_batch_loss(self, images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.inputs(images, rows, cols))
        return F.cross_entropy(logits, QueryInputs.targets(images, rows, cols))

    def _queries(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(self.size, (count,), generator=self._query_generator).to(self.device)
        cols = torch.randint(self.size, (count,), generator=self._query_generator).to(self.device)
        return rows, cols

    def _loss(self, indices: torch.Tensor) -> torch.Tensor:
        return self._batch_loss(self.train_images[indices], *self._queries(len(indices)))

    def _next_images(self) -> torch.Tensor:
        indices = torch.randint(len(self.train_images), (self.batch_size,), generator=self._images_generator)
        self._batch = indices.to(self.device)
        return self._batch

    def train_loss(self) -> torch.Tensor:
        return self._loss(self._next_images())

    def next_output_batch(self) -> OutputBatch:
        """The next images and their query pixels as network inputs; evaluated eagerly (without
        ``compile``). Unlike :meth:`same_batch_loss`, re-evaluating it keeps the query pixels."""
        images = self.train_images[self._next_images()]
        rows, cols = self._queries(len(images))
        inputs = self.inputs(images, rows, cols)
        return OutputBatch(self.model, inputs, QueryInputs.targets(images, rows, cols), "cross-entropy")

    def same_batch_loss(self) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError(f"{self.name}: same_batch_loss() called before any train_loss()")
        return self._loss(self._batch)

    @torch.no_grad()
    def all_positions_loss(self, images: torch.Tensor) -> float:
        """Mean cross-entropy over every image of ``images`` × every query position (raster order)."""
        pixels = self.size * self.size
        total = len(images) * pixels
        chunk = max(1, _EVAL_PIXELS.get(self.device.type, _EVAL_PIXELS_DEFAULT) // pixels)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, total, chunk):
            pair = torch.arange(start, min(start + chunk, total), device=self.device)
            batch = images[pair // pixels]
            rows, cols = (pair % pixels) // self.size, pair % self.size
            logits = self.model(self.inputs(batch, rows, cols))
            targets = QueryInputs.targets(batch, rows, cols)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
        return float(loss_sum / total)

    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        return {
            "validation_loss": self.all_positions_loss(self.validation_images),
            "test_loss": self.all_positions_loss(self.test_images),
        }


@torch.no_grad()
def sample_images(task: AutoregressionTask, num_images: int, *, seed: int) -> torch.Tensor:
    """``num_images`` images (uint8, CPU) drawn pixel by pixel in raster order from the model.

    Each pixel is the inverse CDF of the model's softmax at a uniform draw from the stream of
    ``seed`` (independent of the task's training streams).
    """
    generator = torch_generator(seed, "sampling")
    canvas = torch.zeros(num_images, task.size, task.size, dtype=torch.uint8, device=task.device)
    for row in range(task.size):
        for col in range(task.size):
            rows = torch.full((num_images,), row, device=task.device)
            cols = torch.full((num_images,), col, device=task.device)
            probabilities = torch.softmax(task.model(task.inputs(canvas, rows, cols)).double(), dim=-1)
            uniform = torch.rand(num_images, 1, generator=generator, dtype=torch.float64).to(task.device)
            pixel = torch.searchsorted(probabilities.cumsum(dim=-1), uniform, right=True).squeeze(1)
            # The cumulative sum can end a rounding error below 1.
            canvas[:, row, col] = pixel.clamp(max=task.levels - 1).to(torch.uint8)
    return canvas.cpu()


def write_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    levels: int,
    columns: int | None = None,
    scale: int = 4,
) -> Path:
    """Write images (k, h, w) with values in 0..levels-1 as a grayscale PNG grid; returns the path.

    Images are separated by one mid-gray pixel and each pixel is drawn as ``scale``×``scale``.
    """
    from matplotlib.image import imsave  # matplotlib takes a second to import: only when drawing

    images = np.asarray(images, dtype=np.float64)
    count, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    gap = (levels - 1) / 2
    grid = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1), gap)
    for index, image in enumerate(images):
        top, left = 1 + (index // columns) * (height + 1), 1 + (index % columns) * (width + 1)
        grid[top : top + height, left : left + width] = image
    grid = np.kron(grid, np.ones((scale, scale)))
    path = Path(path)
    imsave(path, grid, cmap="gray", vmin=0, vmax=levels - 1, format="png")
    return path


def options(*, batch_size: int) -> tuple[Option, ...]:
    """The build options shared by the autoregression tasks."""
    return (
        Option(
            "batch_size", batch_size, "images per training minibatch (one query pixel each)", positive_int
        ),
        Option(
            "metric_images",
            None,
            "use only the first k images of the validation and test sets in metrics; null = all",
            optional_positive_int,
        ),
        Option("compile", False, "torch.compile the training loss (input construction + network)", boolean),
    )


def count_parameters(*, size: int, levels: int) -> int:
    """Exact parameter count of the network for ``size``×``size`` images and ``levels`` classes."""
    return count_module_parameters(lambda: AutoregressiveCNN(size=size, levels=levels))
