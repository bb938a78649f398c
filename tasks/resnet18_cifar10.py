"""ResNet-18 on CIFAR-10 (LODO paper §4.4; lodo.md §4.4 and §7.13).

Data (:mod:`tasks.cifar`): pixels / 255, normalised per channel with the training set's mean and
population std; training images augmented after normalisation (zero-pad 4 px, random 32×32 crop,
random horizontal flip); a fresh shuffle of all 50,000 per epoch, batch 2048, the last partial
batch (848) kept. There is no validation split: like the code, metrics use the test set.

Model: the CIFAR ResNet-18 of kuangliu that the code ports to Keras (3×3 stem, no max-pool, 4
stages of 2 BasicBlocks of widths 64/128/256/512, 1×1 projection shortcuts, 4×4 average pool,
dense 512→10); Keras init (Glorot-uniform kernels, zero dense bias, BN γ = 1, β = 0);
11,173,962 parameters.

``bn`` selects the BatchNorm:

* ``faithful`` (default) — what the authors' code ran: Keras BN in inference mode with its
  initial moving statistics (mean 0, variance 1, ε = 1e−3), never updated, i.e. the affine map
  γ·x/√1.001 + β; and Keras' cross-entropy on softmax outputs clipped to [1e−7, 1 − 1e−7].
* ``standard`` — what the paper's "standard ResNet setup" says: PyTorch BatchNorm2d (ε = 1e−5,
  momentum 0.1) with batch statistics in training and running statistics in metrics, and plain
  cross-entropy. Same-batch evaluations leave the running statistics as they were.

Training loss in both modes = cross-entropy + 1e−4·½‖w‖² over every trainable tensor (BN γ/β and
the dense bias included), the value included, as the code reports it. The code adds the term's
gradient by hand (a first-order surrogate); here it is part of the graph, so the value and gradient
are the same and Hessian-vector products also see its 1e−4·I.

Metrics ``test_loss`` (cross-entropy without the L2 term) and ``test_accuracy``, inference mode,
no augmentation, over the first ``metric_images`` test images (default all 10,000).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks._batches import EpochBatches
from tasks._data import resolve_data_dir
from tasks._rng import torch_generator
from tasks._spec import (
    DATA_DIR,
    Option,
    TaskSpec,
    boolean,
    choice,
    count_module_parameters,
    optional_positive_int,
    positive_int,
)
from tasks.base import Preconditioner
from tasks.cifar import load_cifar10

NAME = "resnet18-cifar10"
BN_MODES = ("faithful", "standard")
WEIGHT_DECAY = 1e-4
_KERAS_EPSILON = 1e-7  # Keras clips probabilities to [ε, 1 − ε] before the log
_PAD, _SIZE = 4, 32
_EVAL_BATCH = 2048


class FrozenBatchNorm(nn.Module):
    """Keras BatchNorm in inference mode with its initial statistics: γ·x/√(1 + ε) + β per channel."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = 1.0 / math.sqrt(1.0 + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.weight * self.scale).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _batch_norm(channels: int, bn: str) -> nn.Module:
    return FrozenBatchNorm(channels) if bn == "faithful" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _batch_norm(cout, bn)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _batch_norm(cout, bn)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _batch_norm(cout, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """kuangliu's CIFAR ResNet-18."""

    def __init__(self, bn: str = "faithful", num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = _batch_norm(64, bn)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride, bn), BasicBlock(cout, cout, 1, bn)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


def initialize(model: nn.Module, generator: torch.Generator) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases, BN γ = 1, β = 0 (statistics 0 / 1)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (FrozenBatchNorm, nn.BatchNorm2d)):
                module.weight.fill_(1.0)
                module.bias.zero_()
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()


def keras_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Keras' sparse categorical cross-entropy of softmax outputs: probabilities clipped, then
    renormalised by the log-softmax (``sparse_softmax_cross_entropy_with_logits(log p)``)."""
    probabilities = torch.softmax(logits, dim=1).clamp(_KERAS_EPSILON, 1 - _KERAS_EPSILON)
    return F.cross_entropy(probabilities.log(), targets)


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of uint8 images (N, 3, H, W) at the [0, 1] scale.

    From per-channel histograms: exact, and without a float copy of the whole training set.
    """
    levels = np.arange(256) / 255.0
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].ravel(), minlength=256)
        mean = counts @ levels / counts.sum()
        means.append(mean)
        stds.append(math.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
    return np.array(means), np.array(stds)


class ResNetCifarTask:
    """A seeded instance; see the module docstring."""

    name = NAME

    def __init__(
        self,
        *,
        seed: int,
        device: torch.device,
        dtype: torch.dtype,
        bn: str,
        batch_size: int,
        metric_images: int | None,
        compile: bool,
        channels_last: bool,
        data_dir: Path | None,
    ) -> None:
        self.device, self.dtype = device, dtype
        self.bn = bn
        train_images, train_labels, test_images, test_labels = load_cifar10(resolve_data_dir(data_dir))
        mean, std = channel_statistics(train_images)
        self._mean = torch.tensor(mean, dtype=dtype, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=dtype, device=device).view(1, 3, 1, 1)
        self.train_images = torch.from_numpy(train_images).to(device)
        self.train_labels = torch.from_numpy(train_labels).to(device)
        self.test_images = torch.from_numpy(test_images[:metric_images]).to(device)
        self.test_labels = torch.from_numpy(test_labels[:metric_images]).to(device)

        with torch.device("meta"):
            model = ResNet18(bn)
        self.model = model.to_empty(device="cpu").to(dtype)
        initialize(self.model, torch_generator(seed, "init"))
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(device=device, memory_format=self._memory_format)
        self._forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self._loss_function = keras_cross_entropy if bn == "faithful" else F.cross_entropy

        self._batches = EpochBatches(len(self.train_images), batch_size, torch_generator(seed, "batches"))
        self._augmentation = torch_generator(seed, "augmentation")
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.dtype) / 255 - self._mean) / self._std

    def augment(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Zero-pad 4, crop 32×32 at ``offsets`` (B, 2), mirror where ``flips`` (B,) is true.

        One gather: a mirrored crop reads its columns in reverse order.
        """
        padded = F.pad(images, (_PAD, _PAD, _PAD, _PAD))
        steps = torch.arange(_SIZE, device=images.device)
        rows = offsets[:, :1] + steps
        cols = offsets[:, 1:] + steps
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch = torch.arange(len(images), device=images.device)[:, None, None]
        # Advanced indices around a slice put their dims first: (B, 32, 32, C), a channels-last layout.
        crops = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return crops.contiguous(memory_format=self._memory_format)

    def l2_penalty(self) -> torch.Tensor:
        return 0.5 * WEIGHT_DECAY * sum(p.square().sum() for p in self.model.parameters())

    def _loss(self) -> torch.Tensor:
        indices, offsets, flips = self._batch
        inputs = self.augment(self._normalize(self.train_images[indices]), offsets, flips)
        logits = self._forward(inputs)
        return self._loss_function(logits, self.train_labels[indices]) + self.l2_penalty()

    def train_loss(self) -> torch.Tensor:
        indices = self._batches.next()
        offsets = torch.randint(0, 2 * _PAD + 1, (len(indices), 2), generator=self._augmentation)
        flips = torch.randint(0, 2, (len(indices),), generator=self._augmentation).bool()
        self._batch = (indices.to(self.device), offsets.to(self.device), flips.to(self.device))
        self.model.train()
        return self._loss()

    def same_batch_loss(self) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError(f"{self.name}: same_batch_loss() called before any train_loss()")
        self.model.train()
        buffers = [b.clone() for b in self.model.buffers()]
        loss = self._loss()
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
        return loss

    @torch.no_grad()
    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for start in range(0, len(self.test_images), _EVAL_BATCH):
            images = self._normalize(self.test_images[start : start + _EVAL_BATCH])
            labels = self.test_labels[start : start + _EVAL_BATCH]
            logits = self.model(images.contiguous(memory_format=self._memory_format))
            loss_sum += self._loss_function(logits, labels).double() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum()
        self.model.train(was_training)
        count = len(self.test_images)
        return {"test_loss": float(loss_sum / count), "test_accuracy": float(correct) / count}


SPEC = TaskSpec(
    name=NAME,
    description=(
        "LODO §4.4: CIFAR ResNet-18 on CIFAR-10, batch 2048, pad-4 crop + flip, loss CE + 1e-4·½‖w‖²; "
        "BN frozen at its initial statistics as the authors' code ran it (bn=faithful) or train-mode BN."
    ),
    dtype=torch.float32,
    options=(
        Option(
            "bn",
            "faithful",
            "faithful = frozen initial BN statistics (an affine map) + clipped Keras CE, as the code ran; "
            "standard = train-mode BatchNorm + plain CE",
            choice(*BN_MODES),
        ),
        Option("batch_size", 2048, "images per training minibatch", positive_int),
        Option(
            "metric_images",
            None,
            "use only the first k test images in metrics; null = all",
            optional_positive_int,
        ),
        Option("compile", False, "torch.compile the network", boolean),
        Option("channels_last", False, "channels-last memory format for the network and its inputs", boolean),
        DATA_DIR,
    ),
    build=ResNetCifarTask,
    count_parameters=lambda bn, **_: count_module_parameters(lambda: ResNet18(bn)),
)
