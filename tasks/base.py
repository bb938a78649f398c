"""The Task protocol: a seeded training problem that knows nothing about where it runs.

A task instance is built by :func:`tasks.build` from ``(name, seed, device, dtype, options)``.
Every random source of the instance (initialisation, rotations, noise, minibatches) is drawn
from generators seeded from ``seed``, so the same seed gives the same sequence of losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

# Maps a (k, n) tensor of vectors in flattened-parameter space to G·v for each row; used by
# the Hessian-approximation error metric of LODO-family optimizers.
Preconditioner = Callable[[torch.Tensor], torch.Tensor]


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
