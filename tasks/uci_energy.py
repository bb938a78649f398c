"""UCI Energy regression with an MLP 8-50-1 (AdamQLR paper; clarke.md §3).

768 rows of Gal's ``energy`` data in the AdamQLR permutation (:mod:`tasks.uci`): the first 692
train (588) and validate (104, 15 %), the last 76 test. Inputs and the target (heating load)
standardised with train + validation statistics; loss ½·MSE; batch 588 (full batch, the code's
dataset config). The one-pass paper uses the same network with a validation share of 78/692.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tasks import supervised, uci
from tasks._data import resolve_data_dir
from tasks._spec import DATA_DIR, Option, TaskSpec, positive_int

NAME = "uci-energy"
SIZES = (8, 50, 1)
VALIDATION_PROPORTION = 0.15


def build_uci(
    name: str,
    layout: uci.UciLayout,
    sizes: tuple[int, ...],
    *,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    data_dir: Path | None,
) -> supervised.SupervisedTask:
    """A UCI regression task on ``layout``'s files (shared with ``uci-protein``)."""
    x, y = uci.load_uci(resolve_data_dir(data_dir), layout)
    return supervised.regression_task(
        name,
        sizes,
        (x[: layout.train_val], y[: layout.train_val]),
        (x[-layout.test :], y[-layout.test :]),
        validation_proportion=VALIDATION_PROPORTION,
        seed=seed,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def build(**kwargs) -> supervised.SupervisedTask:
    return build_uci(NAME, uci.ENERGY, SIZES, **kwargs)


SPEC = TaskSpec(
    name=NAME,
    description="AdamQLR's UCI Energy: MLP 8-50-1 (ReLU), ½·MSE on standardised heating load, 588/104/76.",
    dtype=torch.float32,
    options=(Option("batch_size", 588, "examples per minibatch (588 = full batch)", positive_int), DATA_DIR),
    build=build,
    count_parameters=lambda **_: supervised.count_mlp_parameters(SIZES),
)
