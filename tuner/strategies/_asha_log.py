"""The ASHA job's trial log: one JSON line per finished trial, written by a Tune callback.

A module of its own so that Ray Tune is imported only when an ASHA job runs, and so that the
callback pickles by reference: Tune stores its run config (callbacks included) for
``Tuner.restore``, and a restored callback must find this process's live progress hook in
:data:`LIVE_HOOKS`, not a copy from the killed process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

# log path → the running job's progress hook (absent in a pickled copy; set again on resume)
LIVE_HOOKS: dict[str, Callable[[dict[str, Any]], None]] = {}


def read_trial_log(path: Path) -> list[dict[str, Any]]:
    """The finished trials in the order they finished; a torn line (a kill mid-write) is left
    out, so its trial counts as unfinished."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class TrialLog(tune.Callback):
    """On each completed, stopped or failed trial: ``make_record(trial, index)`` appended to
    ``path`` (flushed and fsync'd), then passed to the live hook, if any."""

    def __init__(self, path: str, make_record: Callable[[Any, int], dict[str, Any]]) -> None:
        self.path = path
        self.make_record = make_record

    def _finished(self, trial) -> None:
        log = Path(self.path)
        logged = read_trial_log(log)
        if any(r["trial_id"] == trial.trial_id for r in logged):
            return  # Tune may report a trial twice (complete after error handling)
        record = self.make_record(trial, len(logged))
        torn = log.exists() and not log.read_bytes().endswith(b"\n") and log.stat().st_size > 0
        with open(log, "a") as handle:
            handle.write(("\n" if torn else "") + json.dumps(record, allow_nan=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        hook = LIVE_HOOKS.get(self.path)
        if hook is not None:
            hook(record)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trial)
