"""The tuning strategies behind one registry: name → the module's ``STRATEGY`` (see :mod:`.base`).

A new strategy is one module here exposing ``STRATEGY`` (options model, tune, evaluate, summary,
describe) and one line below; the job runner, the command line, the service's request schema
(``strategy_options`` is the union of every registered options model) and the strategy contract
tests pick it up from this registry.
"""

from __future__ import annotations

from typing import Any

from . import asha, ga, onepass
from .base import AllTrialsFailed, Strategy, StrategyOptions, Summary

STRATEGIES: dict[str, Strategy] = {
    "ga": ga.STRATEGY,
    "asha": asha.STRATEGY,
    "onepass": onepass.STRATEGY,
}

__all__ = ["STRATEGIES", "AllTrialsFailed", "Strategy", "StrategyOptions", "Summary", "describe_strategies"]


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; an unknown one is a ValueError naming the allowed ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"Invalid strategy: {name!r} (allowed: {' | '.join(STRATEGIES)})") from None


def describe_strategies() -> list[dict[str, Any]]:
    """Each strategy's name, summary, optimizers, settings (defaults) and options schema, JSON-ready."""
    return [strategy.describe() for strategy in STRATEGIES.values()]
