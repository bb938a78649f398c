"""The run directory: the files a tuning job writes, each written atomically.

::

    RUN_DIR/config.json                 what was asked (task, optimizer, schedule, space, seed)
    RUN_DIR/generations/NNN.json        one per finished generation: population, seeds,
                                        fitnesses, elite, elite mean, GA state after it
    RUN_DIR/hyperparameters.json        the tuned set with transforms, schedule, seeds, versions
    RUN_DIR/search.png                  a GA run's search: elite means and fitness per generation
    RUN_DIR/evaluation/                 results.json, results.md, curves.png, curves.npz
    RUN_DIR/evaluation/runs/            one .json + .npy per finished evaluation run

A job of K > 1 GA studies (:mod:`tuner.studies`) keeps each study's GA run and the evaluation of
its tuned set in a run directory of its own, and the job's documents beside them::

    RUN_DIR/config.json                 the studies and their seeds
    RUN_DIR/studies/<k>/                study k (0-based): a run directory as above
    RUN_DIR/studies.json                every study and the spread of their results
    RUN_DIR/hyperparameters.json        the median study's, saying which study it is
    RUN_DIR/evaluation/                 the median study's runs and the baselines

A file is written to a temporary name in the same folder and renamed into place, so a crash
leaves either the old file or the new one, never half of one. A generation counts as finished
exactly when its file exists, and so does an evaluation run.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
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
    def search_plot_path(self) -> Path:
        return self.root / "search.png"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def studies_path(self) -> Path:
        return self.root / "studies.json"

    def study(self, index: int) -> RunDir:
        """The run directory of study ``index`` of a multi-study job."""
        return RunDir(self.root / "studies" / str(index))

    def claim(self, config: dict[str, Any], *, resume: bool, stored: bool = False) -> bool:
        """Make this directory the run of ``config``; returns whether it held that run before.

        A new directory gets ``config.json``. One that holds a run is refused unless ``resume``,
        and then must hold the same ``config`` (else the differing keys are named). ``stored``:
        a job store holds the job's spec and progress, so its ``config.json`` is rewritten, never
        read (a lost or corrupt file does not stop the job).
        """
        held = self.config_path.exists()
        if stored:
            write_json(self.config_path, config)
            return held
        if not held:
            if resume:
                raise ValueError(f"Cannot resume {self.root}: no config.json there")
            write_json(self.config_path, config)
            return False
        if not resume:
            raise ValueError(f"{self.root} already holds a run: pass resume to continue it, or another --out")
        saved = read_json(self.config_path)
        asked = json.loads(json.dumps(config))  # compare as stored: tuples become lists
        different = sorted(k for k in {*saved, *asked} if saved.get(k) != asked.get(k))
        if different:
            details = ", ".join(f"{k}: saved {saved.get(k)!r}, asked {asked.get(k)!r}" for k in different[:3])
            raise ValueError(
                f"Cannot resume {self.root}: it was started with different {different} ({details})"
            )
        return True

    def generation_path(self, generation: int) -> Path:
        return self.root / "generations" / f"{generation:03d}.json"

    def finished_generations(self) -> list[dict]:
        """Every finished generation, in order; stops at the first gap."""
        out = []
        while self.generation_path(len(out)).exists():
            out.append(read_json(self.generation_path(len(out))))
        return out


def versions() -> dict[str, str]:
    """The versions that produced a document: Python, lodotune and its main libraries."""
    out = {"python": platform.python_version()}
    for name in ("lodotune", "torch", "numpy", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
