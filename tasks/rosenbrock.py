"""The rescaled Rosenbrock function of the LODO paper (§4.2; lodo.md §4.2).

f(x, y) = 0.01·(1 − x)² + (y − x²)², start (−0.5, 2), minimum f = 0 at (1, 1); float64, no noise,
so :meth:`train_loss` and :meth:`same_batch_loss` are the same function. The class is shared with
``rosenbrock-classic``, which differs only in the scale of the terms and the start.
"""

from __future__ import annotations

import torch

from tasks._spec import TaskSpec
from tasks._vector import VectorModel
from tasks.base import Preconditioner

NAME = "rosenbrock"


class Rosenbrock:
    """f(x, y) = scale·[a·(1 − x)² + b·(y − x²)²] from ``start``; metric ``loss`` = f."""

    def __init__(
        self,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        start: torch.Tensor,
        a: float,
        b: float,
        scale: float,
    ) -> None:
        self.name = name
        self.device, self.dtype = device, dtype
        self.a, self.b, self.scale = a, b, scale
        self.model = VectorModel(start.to(device=device, dtype=dtype))

    @property
    def num_parameters(self) -> int:
        return 2

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.model.x]

    def value(self, point: torch.Tensor) -> torch.Tensor:
        """f at ``point`` (a 2-vector)."""
        x, y = point[0], point[1]
        return self.scale * (self.a * (1 - x) ** 2 + self.b * (y - x**2) ** 2)

    def train_loss(self) -> torch.Tensor:
        return self.value(self.model.x)

    def same_batch_loss(self) -> torch.Tensor:
        return self.value(self.model.x)

    def metrics(self, *, preconditioner: Preconditioner | None = None) -> dict[str, float]:
        with torch.no_grad():
            return {"loss": float(self.value(self.model.x))}


def build(*, seed: int, device: torch.device, dtype: torch.dtype) -> Rosenbrock:
    """The LODO variant; ``seed`` is accepted for uniformity (nothing is random)."""
    del seed
    return Rosenbrock(
        name=NAME, device=device, dtype=dtype, start=torch.tensor([-0.5, 2.0]), a=0.01, b=1.0, scale=1.0
    )


SPEC = TaskSpec(
    name=NAME,
    description="LODO §4.2: f = 0.01(1−x)² + (y−x²)² from (−0.5, 2), deterministic; f(−0.5, 2) = 3.085.",
    dtype=torch.float64,
    options=(),
    build=build,
    count_parameters=lambda: 2,
)
