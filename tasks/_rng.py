"""Seeded random streams of a task instance.

Each random source of an instance (rotation, initialisation, noise, minibatch indices, query
pixels, augmentation, metric probes) has its own named stream derived from the task seed, so
drawing more from one stream (a metric, a same-batch evaluation) never shifts another. Streams
live on the CPU: the same seed gives the same draws on every device, and the few numbers a step
needs are copied to the task's device.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 64-bit seed for the named stream of ``seed`` (stable across processes and versions)."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(stream.encode())])
    return int(sequence.generate_state(1, np.uint64)[0])


def torch_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for the named stream."""
    generator = torch.Generator()
    generator.manual_seed(stream_seed(seed, stream))
    return generator


def numpy_generator(seed: int, stream: str) -> np.random.Generator:
    """A NumPy ``Generator`` for the named stream."""
    return np.random.default_rng(stream_seed(seed, stream))
