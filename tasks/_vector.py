"""The model of the analytic tasks: one parameter vector, nothing else."""

from __future__ import annotations

import torch


class VectorModel(torch.nn.Module):
    """Holds the point ``x`` being optimized as a single ``Parameter``; ``forward`` returns it."""

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(initial.clone())

    def forward(self) -> torch.Tensor:
        return self.x
