"""The run directory: the files a tuning job writes, each written atomically.

::

    RUN_DIR/config.json                 what was asked (task, optimizer, schedule, space, seed)
    RUN_DIR/generations/NNN.json        one per finished generation: population, seeds,
                                        fitnesses, elite, elite mean, GA state after it
    RUN_DIR/hyperparameters.json        the tuned set with transforms, schedule, seeds, versions
    RUN_DIR/evaluation/                 results.json, results.md, curves.png, curves.npz
    RUN_DIR/evaluation/runs/            one .json + .npy per finished evaluation run

A file is written to a temporary name in the same folder and renamed into place, so a crash
leaves either the old file or the new one, never half of one. A generation counts as finished
exactly when its file exists, and so does an evaluation run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _write_atomically(path: Path, mode: str, write) -> None:
    """``write(handle)`` into a temp file in ``path``'s folder, fsync, rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: Any) -> None:
    """Atomic JSON write."""
    _write_atomically(path, "w", lambda handle: json.dump(document, handle, indent=2, allow_nan=True))


def write_array(path: Path, array: np.ndarray) -> None:
    """Atomic ``.npy`` write."""
    _write_atomically(path, "wb", lambda handle: np.save(handle, array))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunDir:
    """Paths and reads/writes of one tuning run's directory."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def hyperparameters_path(self) -> Path:
        return self.root / "hyperparameters.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    def generation_path(self, generation: int) -> Path:
        return self.root / "generations" / f"{generation:03d}.json"

    def finished_generations(self) -> list[dict]:
        """Every finished generation, in order; stops at the first gap."""
        out = []
        while self.generation_path(len(out)).exists():
            out.append(read_json(self.generation_path(len(out))))
        return out
