"""The GA's hyperparameter normalizations (lodo.md §3.1): value x ↔ search coordinate u.

The GA adds N(0, σ²) noise to u, decodes it, runs the trial, and averages the elite's u
*re-encoded from the decoded values actually used* (§3.2). Three transforms:

* ``log`` (rates and everything "standard" in the authors' code): u = ln x, x = eᵘ; x > 0.
* ``log1m`` (the authors' decay transform): u = ln(max(1e−30, 1 − x)), x = max(0, 1 − eᵘ); x in
  [0, 1]. A sampled u > 0 decodes to x = 0 ("clipped back to 0"), so encode(decode(u)) = 0 there:
  the clipped value, not the sample, enters the elite mean, exactly as in the authors' code.
* ``logit`` (a selectable alternative for decays, not in the paper): u = ln(x / (1 − x)),
  x = 1 / (1 + e⁻ᵘ); x in (0, 1), so a decay stays inside (0, 1) both ways.

Decoding never produces a value its encoder refuses: ``log`` and ``logit`` clamp x to the
nearest representable float inside their domain when eᵘ overflows or underflows (|u| beyond
~709 for log, ~37 / ~745 for logit). Such samples are 200+ σ away from any GA mean; the clamp
only keeps a run from crashing on them.
"""

from __future__ import annotations

import math
import sys
from typing import Literal, get_args

from ._errors import invalid

Transform = Literal["log", "log1m", "logit"]
TRANSFORMS: tuple[str, ...] = get_args(Transform)

_LOG1M_FLOOR = 1e-30  # the authors' floor on 1 − x
_TINY = math.ulp(0.0)  # smallest positive float
_BELOW_ONE = 1.0 - sys.float_info.epsilon / 2  # largest float < 1
_LOG_MAX = math.log(sys.float_info.max)


def _check_transform(transform: str) -> None:
    if transform not in TRANSFORMS:
        raise invalid("transform", repr(transform), " | ".join(TRANSFORMS))


def _finite(transform: str, what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{what} for transform {transform!r}", repr(value), "a finite number")
    return float(value)


def encode(transform: str, x: float) -> float:
    """Search coordinate u of the hyperparameter value ``x``; a value outside the transform's
    domain is a ValueError naming the transform, the value and the allowed range."""
    _check_transform(transform)
    x = _finite(transform, "value", x)
    if transform == "log":
        if x <= 0:
            raise invalid("value for transform 'log'", repr(x), "x > 0")
        return math.log(x)
    if transform == "log1m":
        if not 0.0 <= x <= 1.0:
            raise invalid("value for transform 'log1m'", repr(x), "0 <= x <= 1")
        return math.log(max(_LOG1M_FLOOR, 1.0 - x))
    if not 0.0 < x < 1.0:
        raise invalid("value for transform 'logit'", repr(x), "0 < x < 1")
    return math.log(x) - math.log1p(-x)


def decode(transform: str, u: float) -> float:
    """Hyperparameter value of the search coordinate ``u`` (any finite number)."""
    _check_transform(transform)
    u = _finite(transform, "coordinate", u)
    if transform == "log":
        return min(max(math.exp(min(u, _LOG_MAX)), _TINY), sys.float_info.max)
    if transform == "log1m":
        return max(0.0, 1.0 - math.exp(min(u, 0.0)))
    x = 1.0 / (1.0 + math.exp(-u)) if u >= 0.0 else math.exp(u) / (1.0 + math.exp(u))
    return min(max(x, _TINY), _BELOW_ONE)
