"""Where dataset files live, and the error a user sees when one is not there.

Nothing here downloads: the project runs offline, and a silent download would hide which copy of
a dataset a result was computed on.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LODOTUNE_DATA_DIR"


def resolve_data_dir(option: Path | None) -> Path:
    """The data directory: the ``data_dir`` option, else ``$LODOTUNE_DATA_DIR``, else ``./data``.

    Read when a task is built (not at import), so one process can build tasks on several
    directories.
    """
    if option is not None:
        return option.expanduser().resolve()
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def missing(paths: list[Path], *, what: str, source: str) -> FileNotFoundError:
    """The error for a dataset file that is not there, naming every accepted path and the source."""
    expected = " or ".join(str(p) for p in paths)
    return FileNotFoundError(
        f"{what} not found: expected {expected}. {source} "
        f"(set ${DATA_DIR_ENV} or the task option data_dir to the directory that holds it; "
        f"nothing is downloaded)"
    )


def malformed(path: Path, problem: str) -> ValueError:
    """The error for a dataset file whose content is not what its format promises."""
    return ValueError(f"Malformed dataset file {path}: {problem}")


def first_existing(paths: list[Path], *, what: str, source: str) -> Path:
    """The first of ``paths`` that exists (e.g. the raw file, then its ``.gz``)."""
    for path in paths:
        if path.is_file():
            return path
    raise missing(paths, what=what, source=source)
