"""The classic Rosenbrock function as the AdamQLR code poses it (clarke.md §3).

Least squares with residuals r = (a − x, √b (y − x²)), a = 1, b = 100, and loss = mean of ½r²,
i.e. f = ¼[(1 − x)² + 100 (y − x²)²] (a quarter of the textbook function: same minimum (1, 1),
same shape). Evaluation runs start at (1, −1); tuning runs start at a standard-normal point, here
``start="random"``, drawn from the seed. float64, no noise.
"""

from __future__ import annotations

import torch

from tasks._rng import torch_generator
from tasks._spec import Option, TaskSpec, choice
from tasks.rosenbrock import Rosenbrock

NAME = "rosenbrock-classic"


def build(*, seed: int, device: torch.device, dtype: torch.dtype, start: str) -> Rosenbrock:
    if start == "fixed":
        point = torch.tensor([1.0, -1.0], dtype=torch.float64)
    else:
        point = torch.randn(2, generator=torch_generator(seed, "start"), dtype=torch.float64)
    return Rosenbrock(name=NAME, device=device, dtype=dtype, start=point, a=1.0, b=100.0, scale=0.25)


SPEC = TaskSpec(
    name=NAME,
    description="AdamQLR's Rosenbrock: mean ½r² of r = (1−x, 10(y−x²)) = ¼[(1−x)² + 100(y−x²)²].",
    dtype=torch.float64,
    options=(
        Option(
            "start",
            "fixed",
            "fixed = (1, −1), the evaluation start; random = N(0, I) from the seed, the tuning start",
            choice("fixed", "random"),
        ),
    ),
    build=build,
    count_parameters=lambda start: 2,
)
