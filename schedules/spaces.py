"""Search spaces: which transform (§3.1) each hyperparameter of an optimizer is tuned in.

A :class:`SearchSpace` declares every transform explicitly; :func:`space_for` derives one from
the optimizer registry under one of two normalizations:

* ``code`` (default, lodo.md §3.1): the authors' rule **by name** — a hyperparameter is a decay
  iff its name contains "momentum" or "beta"; everything else uses ``log``. So RMSprop's ρ is
  tuned in log space (and may be sampled above 1, which diverges), as in the authors' runs.
  The rule is theirs for the optimizers of their paper; the others (AdamQLR, series SFN), which
  their code never tuned, use the role as ``paper`` does.
* ``paper`` (Appendix E, §3.8): **by role** — the registry's ``kind`` ``decay`` gets the decay
  transform; ``rate`` and ``other`` get ``log``. Differs from ``code`` only for RMSprop's ρ.

``decay_transform`` chooses ``log1m`` (the authors' u = ln(1 − x)) or ``logit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

import lodo

from ._errors import invalid, read_json, validated
from .transforms import Transform, decode, encode

Normalization = Literal["code", "paper"]
DecayTransform = Literal["log1m", "logit"]
NORMALIZATIONS: tuple[str, ...] = ("code", "paper")
DECAY_TRANSFORMS: tuple[str, ...] = ("log1m", "logit")
_DECAY_NAME_PARTS = ("momentum", "beta")  # the authors' name test (§3.1)
# The optimizers of the LODO paper, the ones the authors' name test was ever applied to.
LODO_PAPER_OPTIMIZERS = frozenset(
    {
        "lodo",
        "lodo-diagonal",
        "lodo-global",
        "lodo-residuals",
        "lodo-no-momentum",
        "lodo-sgd",
        "adam",
        "momentum",
        "rmsprop",
        "yogi",
        "lars",
        "lbfgs",
        "olbfgs",
        "bfgs",
        "levenberg-marquardt",
        "newton",
    }
)


class ParamSpace(BaseModel):
    """One tuned hyperparameter and the transform its search coordinate uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    transform: Transform


class SearchSpace(BaseModel):
    """The tuned hyperparameters of ``optimizer``, each with its transform.

    ``params`` must name every hyperparameter of the optimizer exactly once (the GA sets all of
    them, §3.2); they are kept in the registry's order. ``normalization`` records how the
    transforms were chosen: ``code``, ``paper``, or a free label (``custom``) for a space read
    from a file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: str
    normalization: str
    params: tuple[ParamSpace, ...]

    @field_validator("optimizer")
    @classmethod
    def _registered(cls, optimizer: str) -> str:
        lodo.get(optimizer)
        return optimizer

    @field_validator("params")
    @classmethod
    def _names_match_the_registry(
        cls, params: tuple[ParamSpace, ...], info: ValidationInfo
    ) -> tuple[ParamSpace, ...]:
        """Every hyperparameter exactly once, put in registry order whatever the order given, so
        a space read from a file lines up with the registry (and with ``space_for``)."""
        if "optimizer" not in info.data:  # already reported as unknown
            return params
        optimizer = info.data["optimizer"]
        allowed = lodo.get(optimizer).names
        names = [p.name for p in params]
        each_once = f"{' | '.join(allowed) or 'none'}, each once"
        for name in names:
            if name not in allowed:
                raise invalid(f"hyperparameter of {optimizer}", repr(name), each_once)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise invalid(f"search space for {optimizer}", f"{duplicates[0]!r} listed twice", each_once)
        missing = [n for n in allowed if n not in names]
        if missing:
            raise invalid(f"search space for {optimizer}", f"missing {', '.join(missing)}", each_once)
        return tuple(sorted(params, key=lambda p: allowed.index(p.name)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def transforms(self) -> dict[str, str]:
        """Name → transform, for recording next to every tuned result."""
        return {p.name: p.transform for p in self.params}

    def _check_keys(self, given: Mapping[str, float], what: str) -> None:
        unknown = sorted(set(given) - set(self.names))
        missing = [n for n in self.names if n not in given]
        if unknown or missing:
            got = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise invalid(f"{what} for {self.optimizer}", got, " | ".join(self.names) or "none")

    def encode(self, values: Mapping[str, float]) -> dict[str, float]:
        """Search coordinates of hyperparameter ``values`` (exactly this space's names)."""
        self._check_keys(values, "hyperparameters")
        return {p.name: _named(p.name, encode, p.transform, values[p.name]) for p in self.params}

    def decode(self, coords: Mapping[str, float]) -> dict[str, float]:
        """Hyperparameter values of search coordinates ``coords`` (exactly this space's names)."""
        self._check_keys(coords, "coordinates")
        return {p.name: _named(p.name, decode, p.transform, coords[p.name]) for p in self.params}


def _named(name: str, fn, transform: str, value: float) -> float:
    try:
        return fn(transform, value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def space_for(
    optimizer: str, *, normalization: Normalization = "code", decay_transform: DecayTransform = "log1m"
) -> SearchSpace:
    """The search space of a registered optimizer under ``normalization`` (see the module doc).
    An unknown optimizer, normalization or decay transform is a ValueError listing the allowed ones."""
    spec = lodo.get(optimizer)
    if normalization not in NORMALIZATIONS:
        raise invalid("normalization", repr(normalization), " | ".join(NORMALIZATIONS))
    if decay_transform not in DECAY_TRANSFORMS:
        raise invalid("decay_transform", repr(decay_transform), " | ".join(DECAY_TRANSFORMS))

    def is_decay(hp: lodo.Hyperparameter) -> bool:
        if normalization == "code" and optimizer in LODO_PAPER_OPTIMIZERS:
            return any(part in hp.name for part in _DECAY_NAME_PARTS)
        return hp.kind == "decay"

    params = tuple(
        ParamSpace(name=hp.name, transform=decay_transform if is_decay(hp) else "log")
        for hp in spec.hyperparameters
    )
    return SearchSpace(optimizer=optimizer, normalization=normalization, params=params)


def load_space(path: str | Path) -> SearchSpace:
    """A search space from a JSON file in ``SearchSpace.model_dump()`` form, e.g.
    ``{"optimizer": "adam", "normalization": "custom", "params": [{"name": "lr", "transform":
    "log"}, ...]}`` (``normalization`` defaults to ``custom``). Every problem — unknown key,
    unknown optimizer or hyperparameter name, transform not in ``TRANSFORMS`` — is a ValueError
    naming the field and the allowed values."""
    data = read_json(path, "search space")
    if isinstance(data, dict):
        data = {"normalization": "custom", **data}
    return validated(SearchSpace, data, f"search space file {str(path)!r}")
