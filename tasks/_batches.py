"""Minibatch indices drawn epoch by epoch: a fresh permutation per epoch, consecutive slices of it.

This is the Keras ``shuffle + batch + repeat`` of the ResNet code (lodo.md §4.4) and the
``drop_last=False`` reading of the AdamQLR loaders (clarke.md §7.1): the last batch of an epoch
is the remainder, smaller than the others.
"""

from __future__ import annotations

import torch


class EpochBatches:
    """Index batches over ``0 .. size-1``; all draws come from ``generator`` (CPU)."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        self.size = size
        self.batch_size = batch_size
        self._generator = generator
        self._order = torch.empty(0, dtype=torch.long)
        self._position = 0

    def next(self) -> torch.Tensor:
        """The next batch of indices (CPU, int64)."""
        if self._position >= len(self._order):
            self._order = torch.randperm(self.size, generator=self._generator)
            self._position = 0
        batch = self._order[self._position : self._position + self.batch_size]
        self._position += len(batch)
        return batch
