"""What a trial's budget counts (clarke.md §2.1, §2.3): training examples, updates, seconds or
loss evaluations — one rule for ASHA's rungs and for the final reruns after it.

* ``examples``: training examples seen, updates × examples per update (the fixed-epoch suite's
  unit; a bigger batch costs more). An update's examples are its batch size, at most the training
  set (a full-batch task); an epoch's last, smaller batch counts as a full one. Needs a task with
  a ``batch_size`` option. The default where the task has one.
* ``updates``: optimizer steps, whatever one costs in loss evaluations (AdamQLR's second,
  same-batch evaluation is not charged). The default on tasks without batches (Rosenbrock: the
  paper's 200 steps).
* ``seconds``: the trial's measured wall time, every curvature product included (the paper's
  runtime rungs, ``time_total_s``).
* ``evaluations``: loss evaluations, the LODO paper's count (L-BFGS, AdamQLR and adaptive SFN
  pay two per update): fair only among optimizers that spend the same per update.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import lodo
from tasks.registry import spec as task_spec

from ._validation import invalid

BudgetKind = Literal["examples", "updates", "seconds", "evaluations"]
BUDGET_KINDS: tuple[str, ...] = ("examples", "updates", "seconds", "evaluations")
PAPER_MAX_SECONDS = 900  # clarke.md §2.3: max_t of every suite but CIFAR-10's long and PTB's
_TWO_EVALUATIONS = ("gradient-pair", "same-batch-loss", "same-batch-outputs")
clock = time.perf_counter  # the seconds budget's clock (a module attribute, so tests can step it)


def has_batches(task: str) -> bool:
    return any(option.name == "batch_size" for option in task_spec(task).options)


def resolve_kind(task: str, kind: str | None) -> str:
    """``kind``, or the default for ``task`` (examples where it has batches, else updates);
    examples on a task without batches is a ValueError naming the kinds it can measure."""
    if kind is None:
        return "examples" if has_batches(task) else "updates"
    if kind not in BUDGET_KINDS:
        raise invalid("budget", kind, " | ".join(BUDGET_KINDS))
    if kind == "examples" and not has_batches(task):
        allowed = " | ".join(k for k in BUDGET_KINDS if k != "examples")
        raise invalid(f"budget for {task} (it has no minibatches to count)", kind, allowed)
    return kind


def evaluations_per_update(optimizer: str) -> int:
    """Loss evaluations one update of ``optimizer`` costs (the registry's evaluation mode)."""
    return 2 if lodo.get(optimizer).evaluation in _TWO_EVALUATIONS else 1


def examples_per_update(task, batch_size: int | None) -> int:
    """Training examples one update of a built ``task`` sees at ``batch_size``."""
    if batch_size is None:
        return 1
    train_set = getattr(task, "train_set", None)
    size = len(train_set[0]) if train_set is not None else None
    return min(batch_size, size) if size else batch_size


def default_batch_size(task: str, task_options: dict) -> int | None:
    """The batch size ``task`` runs at with ``task_options`` (None: it has no batches)."""
    if not has_batches(task):
        return None
    return int(task_spec(task).resolve_options(task_options)["batch_size"])


def default_max_t(kind: str, final_steps: int, batch_size: int | None) -> int:
    """A trial's budget when none is given: the task's final length in updates (or evaluations),
    in examples that length at the task's default batch size, in seconds the paper's 900 s."""
    if kind == "seconds":
        return PAPER_MAX_SECONDS
    if kind == "examples":
        return final_steps * (batch_size or 1)
    return final_steps


def final_evaluations(kind: str, max_t: int, optimizer: str, examples: int) -> int | None:
    """The loss evaluations a final rerun of ``optimizer`` gets for a budget of ``max_t`` ``kind``
    at ``examples`` per update (None for seconds: the run is stopped by its clock instead)."""
    if kind == "seconds":
        return None
    if kind == "evaluations":
        return max_t
    updates = max_t if kind == "updates" else math.ceil(max_t / examples)
    return max(1, updates) * evaluations_per_update(optimizer)


def most_evaluations(kind: str, max_t: int, smallest_batch: int | None) -> int | None:
    """The most loss evaluations a trial with budget ``max_t`` ``kind`` can make (two an update, at
    the smallest batch it may draw); None for seconds, which its clock bounds instead."""
    if kind == "seconds":
        return None
    if kind == "evaluations":
        return max_t
    updates = max_t if kind == "updates" else math.ceil(max_t / (smallest_batch or 1))
    return 2 * updates


class Meter:
    """How much of a trial's budget is spent: call :meth:`spent` after every update with the
    loss evaluations recorded so far."""

    def __init__(self, kind: str, examples: int) -> None:
        self.kind, self.examples = kind, examples
        self.updates = 0
        self.start = clock()

    def spent(self, evaluations: int) -> float:
        self.updates += 1
        return self.value(evaluations)

    def value(self, evaluations: int) -> float:
        if self.kind == "seconds":
            return clock() - self.start
        if self.kind == "evaluations":
            return evaluations
        return self.updates * (self.examples if self.kind == "examples" else 1)

    def counts(self, evaluations: int) -> dict[str, float]:
        """Every count, for the trial's report."""
        return {
            "updates": self.updates,
            "evaluations": evaluations,
            "examples": self.updates * self.examples,
            "seconds": clock() - self.start,
        }


DESCRIPTIONS = {
    "examples": "training examples seen (updates × batch size)",
    "updates": "optimizer updates, whatever each costs in loss evaluations",
    "seconds": "measured wall seconds of the trial, every curvature product included",
    "evaluations": "loss evaluations (the LODO paper's count: two per update of a pair or same-batch step)",
}
