"""The Task protocol: a seeded training problem that knows nothing about where it runs.

A task instance is built by :func:`tasks.build` from ``(name, seed, device, dtype, options)``.
Every random source of the instance (initialisation, rotations, noise, minibatches) is drawn
from generators seeded from ``seed``, so the same seed gives the same sequence of losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

# Maps a (k, n) tensor of vectors in flattened-parameter space to G·v for each row; used by
# the Hessian-approximation error metric of LODO-family optimizers.
Preconditioner = Callable[[torch.Tensor], torch.Tensor]

# The training losses of the supervised tasks as functions of the model's outputs: softmax
# cross-entropy (class scores on dim 1, mean over the rest), and the mean over all elements of
# ½(output − target)².
LossForm = Literal["cross-entropy", "half-mse"]


def output_loss(form: LossForm, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss ``form`` of ``outputs`` against ``targets``."""
    if form == "cross-entropy":
        return F.cross_entropy(outputs, targets)
    return 0.5 * F.mse_loss(outputs, targets)


@runtime_checkable
class Task(Protocol):
    """What an optimizer trial needs from a training problem."""

    name: str
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    @property
    def num_parameters(self) -> int:
        """Number of trainable scalars (the n of the LODO paper)."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters, in the task's fixed flattening order."""

    def train_loss(self) -> torch.Tensor:
        """Training loss on a fresh minibatch (or fresh noise), graph attached, scalar."""

    def same_batch_loss(self) -> torch.Tensor:
        """Training loss on the batch of the last :meth:`train_loss` call (noise not moved)."""

    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        """Task metrics (test loss, accuracy, Hessian-approximation error, ...); no state moves."""


@dataclass(frozen=True)
class OutputBatch:
    """One training minibatch as a model, its inputs and targets, and the loss form.

    ``output_loss(loss, model(inputs), targets)`` is the task's training loss on this batch, so an
    optimizer can split it into the model's outputs and the loss on them (the Gauss–Newton /
    Fisher curvature of AdamQLR needs J·d of the outputs and the loss's Hessian in output space).
    """

    model: torch.nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    loss: LossForm

    def evaluate(self) -> torch.Tensor:
        """The training loss on this batch at the model's current parameters, graph attached."""
        return output_loss(self.loss, self.model(self.inputs), self.targets)


@runtime_checkable
class OutputTask(Task, Protocol):
    """A task whose training loss is a loss form of a model's outputs (the supervised MLPs, the
    autoregression CNNs). Rosenbrock and the quadratic bowl have no such split."""

    def next_output_batch(self) -> OutputBatch:
        """Draw the next training minibatch — the one :meth:`train_loss` would have drawn — without
        evaluating it. It becomes the task's current batch, the one :meth:`same_batch_loss` sees."""
