"""Minibatch supervised learning with an MLP: the AdamQLR / one-pass tasks (clarke.md §3, §5.5).

Shared by ``uci-energy``, ``uci-protein``, ``fashion-mnist-mlp``, ``digits-mlp`` and ``diabetes-mlp``.
Following the AdamQLR code: the "train" file is split into train / validation by rounding the
train part to the nearest integer; inputs (and, for regression, targets) are standardised per feature with the
statistics of train + validation (population std, a zero std replaced by 1); the MLP is Haiku's
(ReLU between layers, none after the last; weights truncated normal at ±2σ with σ = 1/√fan_in,
zero biases — not PyTorch's Kaiming-uniform default). Batches: a fresh permutation per epoch, the
last batch of an epoch the remainder (the code pads with NaN rows and takes NaN-ignoring means,
which is the same loss).

Losses: softmax cross-entropy (classification); ½·MSE in standardised units (regression).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks._batches import EpochBatches
from tasks._rng import torch_generator
from tasks._spec import count_module_parameters
from tasks.base import LossForm, OutputBatch, Preconditioner, output_loss


class MLP(nn.Module):
    """Dense layers of ``sizes`` with ReLU between them and none after the last."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def count_mlp_parameters(sizes: Sequence[int]) -> int:
    return count_module_parameters(lambda: MLP(sizes))


def initialize(model: MLP, generator: torch.Generator) -> None:
    """Haiku's Linear default: weights truncated normal (±2σ, σ = 1/√fan_in), biases zero."""
    with torch.no_grad():
        for layer in model.layers:
            std = 1.0 / math.sqrt(layer.in_features)
            nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std, generator=generator)
            layer.bias.zero_()


def split_train_validation(count: int, validation_proportion: float) -> int:
    """Size of the train part of ``count`` examples (the AdamQLR rounding; the rest validates)."""
    return int(np.rint(count * (1 - validation_proportion)))


def standardizer(train_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population std of ``train_val`` (rows = examples); zero std → 1."""
    std = train_val.std(axis=0)
    return train_val.mean(axis=0), np.where(std == 0, 1.0, std)


@dataclass(frozen=True)
class Data:
    """Standardised inputs and targets of the three splits (NumPy; targets int labels or (N, 1))."""

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def prepare(
    train_val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    validation_proportion: float,
    standardize_targets: bool,
) -> tuple[Data, float]:
    """Split and standardise; also returns the target std (1 when targets are not standardised)."""
    (x, y), (x_test, y_test) = train_val, test
    x_mean, x_std = standardizer(x)
    x, x_test = (x - x_mean) / x_std, (x_test - x_mean) / x_std
    target_std = 1.0
    if standardize_targets:
        y_mean, y_std = standardizer(y)
        y, y_test = (y - y_mean) / y_std, (y_test - y_mean) / y_std
        target_std = float(y_std[0])
    cut = split_train_validation(len(x), validation_proportion)
    return Data((x[:cut], y[:cut]), (x[cut:], y[cut:]), (x_test, y_test)), target_std


class SupervisedTask:
    """A seeded MLP task. Metrics, for the validation and test sets: ``*_loss`` and ``*_accuracy``
    (classification) or ``*_loss`` and ``*_mse`` (regression; mean squared error in the units of the
    original targets, as the one-pass paper reports it).
    """

    def __init__(
        self,
        *,
        name: str,
        seed: int,
        device: torch.device,
        dtype: torch.dtype,
        sizes: Sequence[int],
        data: Data,
        classification: bool,
        batch_size: int,
        target_std: float = 1.0,
    ) -> None:
        self.name = name
        self.device, self.dtype = device, dtype
        self.classification = classification
        self.target_std = target_std
        with torch.device("meta"):
            model = MLP(sizes)
        self.model = model.to_empty(device="cpu").to(dtype)
        initialize(self.model, torch_generator(seed, "init"))
        self.model.to(device)

        def tensors(split: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = split
            targets = torch.as_tensor(y, device=device)
            targets = targets.long() if classification else targets.to(dtype)
            return torch.as_tensor(x, device=device).to(dtype), targets

        self.train_set, self.validation_set, self.test_set = map(
            tensors, (data.train, data.validation, data.test)
        )
        self._batches = EpochBatches(len(self.train_set[0]), batch_size, torch_generator(seed, "batches"))
        self._batch: torch.Tensor | None = None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    @property
    def loss_form(self) -> LossForm:
        return "cross-entropy" if self.classification else "half-mse"

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return output_loss(self.loss_form, outputs, targets)

    def _batch_loss(self, indices: torch.Tensor) -> torch.Tensor:
        inputs, targets = self.train_set
        return self._loss(self.model(inputs[indices]), targets[indices])

    def train_loss(self) -> torch.Tensor:
        self._batch = self._batches.next().to(self.device)
        return self._batch_loss(self._batch)

    def next_batch_indices(self) -> torch.Tensor:
        """The next training minibatch as indices into ``train_set`` (what ``next_output_batch``
        takes; a population gathers its members' batches at once from the shared set)."""
        self._batch = self._batches.next().to(self.device)
        return self._batch

    def next_output_batch(self) -> OutputBatch:
        rows = self.next_batch_indices()
        inputs, targets = self.train_set
        return OutputBatch(self.model, inputs[rows], targets[rows], self.loss_form)

    def same_batch_loss(self) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError(f"{self.name}: same_batch_loss() called before any train_loss()")
        return self._batch_loss(self._batch)

    def validation_loss(self) -> torch.Tensor:
        """Loss on the whole validation set, graph attached (the one-pass HPO objective)."""
        inputs, targets = self.validation_set
        return self._loss(self.model(inputs), targets)

    @property
    def batch_size(self) -> int:
        """Examples per training minibatch."""
        return self._batches.batch_size

    def validation_minibatch(self, generator: torch.Generator) -> torch.Tensor | None:
        """Indices (CPU, int64) of a validation minibatch of the training batch size, drawn from
        ``generator`` (CPU) without replacement; None when the batch size is at least the
        validation set's size (a full-batch task, e.g. UCI): the minibatch is the whole set. The
        task's own streams (initialisation, training batches) are not touched."""
        size = len(self.validation_set[0])
        if self.batch_size >= size:
            return None
        return torch.randperm(size, generator=generator)[: self.batch_size]

    def validation_minibatch_loss(self, generator: torch.Generator) -> torch.Tensor:
        """Loss on :meth:`validation_minibatch` (graph attached): the one-pass paper's objective.
        On a full-batch task it is exactly :meth:`validation_loss`."""
        indices = self.validation_minibatch(generator)
        if indices is None:
            return self.validation_loss()
        inputs, targets = self.validation_set
        indices = indices.to(self.device)
        return self._loss(self.model(inputs[indices]), targets[indices])

    @torch.no_grad()
    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        result = {}
        for split, (inputs, targets) in (("validation", self.validation_set), ("test", self.test_set)):
            outputs = self.model(inputs)
            result[f"{split}_loss"] = float(self._loss(outputs, targets))
            if self.classification:
                result[f"{split}_accuracy"] = float((outputs.argmax(dim=1) == targets).double().mean())
            else:
                result[f"{split}_mse"] = float(F.mse_loss(outputs, targets).double() * self.target_std**2)
        return result


def regression_task(
    name: str,
    sizes: Sequence[int],
    train_val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    validation_proportion: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
) -> SupervisedTask:
    """An MLP regression task on standardised inputs and targets (the UCI recipe)."""
    data, target_std = prepare(
        train_val, test, validation_proportion=validation_proportion, standardize_targets=True
    )
    return SupervisedTask(
        name=name,
        seed=seed,
        device=device,
        dtype=dtype,
        sizes=sizes,
        data=data,
        classification=False,
        batch_size=batch_size,
        target_std=target_std,
    )
