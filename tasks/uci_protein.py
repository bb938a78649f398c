"""UCI Protein (tertiary structure) regression with an MLP 9-100-1 (AdamQLR paper; clarke.md §3).

45,730 rows of Gal's ``protein-tertiary-structure`` data in the AdamQLR permutation
(:mod:`tasks.uci`): the first 41,157 train (34,983) and validate (6,174, 15 %), the last 4,573
test. Inputs and the target (RMSD) standardised; loss ½·MSE; batch 1000 (the code's config).
"""

from __future__ import annotations

import torch

from tasks import supervised, uci
from tasks._spec import DATA_DIR, Option, TaskSpec, positive_int
from tasks.uci_energy import build_uci

NAME = "uci-protein"
SIZES = (9, 100, 1)


def build(**kwargs) -> supervised.SupervisedTask:
    return build_uci(NAME, uci.PROTEIN, SIZES, **kwargs)


SPEC = TaskSpec(
    name=NAME,
    description="AdamQLR's UCI Protein: MLP 9-100-1 (ReLU), ½·MSE on standardised RMSD, 34983/6174/4573.",
    dtype=torch.float32,
    options=(Option("batch_size", 1000, "examples per minibatch", positive_int), DATA_DIR),
    build=build,
    count_parameters=lambda **_: supervised.count_mlp_parameters(SIZES),
)
