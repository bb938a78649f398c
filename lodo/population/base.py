"""The contract of a population optimizer: one optimizer's update for P independent members at once.

A population of P trials of one optimizer on one task keeps all parameters of all members in one
tensor ``[P, n]``: row i is member i's parameters flattened in the task's order (the order of
``task.parameters()``, as LODO's flat vector). A :class:`PopulationOptimizer` holds the state of
all P members the same way, and each member's hyperparameters as ``[P]`` tensors, so one step
is one batched program whatever P is — the per-trial class's arithmetic, member by member.

Rules every implementation keeps:

* **Same numbers.** Member i's update equals what the registry's per-trial optimizer, built
  with member i's values and seed, computes from the same gradient (up to rounding).
* **Independence.** No operation mixes members: a non-finite member never changes another.
* **Refusal.** :meth:`step` returns a ``[P]`` bool tensor of the members it refused (LODO's
  non-finite gradient); the caller drops them, so what their rows hold afterwards is unused.
* **Compaction.** :meth:`keep` keeps the rows ``index`` of every state tensor (the survivors
  after a divergence), so state and hyperparameters stay aligned with the caller's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

# Maps a (k, n) tensor of flat vectors to G·v for each row (one member's preconditioner).
Preconditioner = Callable[[torch.Tensor], torch.Tensor]


def member_values(values: Sequence[Mapping[str, float]], name: str, like: torch.Tensor) -> torch.Tensor:
    """The hyperparameter ``name`` of every member as a ``[P]`` tensor in ``like``'s dtype and device."""
    return torch.tensor([float(v[name]) for v in values], dtype=like.dtype, device=like.device)


class PopulationOptimizer:
    """Base class: ``state`` and ``hyper`` map names to tensors whose first dimension is the member.

    Subclasses fill both in ``__init__`` and implement :meth:`step`; :meth:`keep` is generic.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.hyper: dict[str, torch.Tensor] = {}
        self.steps = 0  # steps taken; the same for every surviving member

    @property
    def size(self) -> int:
        """P, the number of members."""
        return next(iter(self.hyper.values())).shape[0]

    def step(self, params: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """One update of every member, in place on ``params`` (``[P, n]``) from ``grads`` (``[P, n]``,
        the gradient of each member's loss); returns the ``[P]`` bool tensor of refused members."""
        raise NotImplementedError

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members ``index`` (an int64 tensor of rows), in that order."""
        for store in (self.state, self.hyper):
            for key, tensor in store.items():
                store[key] = tensor.index_select(0, index.to(tensor.device))
        self._after_keep(index)

    def _after_keep(self, index: torch.Tensor) -> None:
        """Hook for implementations that keep derived per-member data outside ``state``."""

    def precondition(self, member: int) -> Preconditioner | None:
        """Member ``member``'s G (``(k, n) → (k, n)``) for the Hessian-approximation metric, or None."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "members": self.size}
