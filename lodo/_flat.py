"""The flat-vector view of an optimizer's parameters.

LODO and the second-order baselines act on all parameters of all groups as one vector x ∈ Rⁿ
(the permutations of LODO mix coordinates across tensors). These helpers gather and scatter
that vector in the fixed order groups → parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ._validation import fail


def param_list(params: Iterable[Any], optimizer: str) -> list[Any]:
    """``params`` as a list (tensors or group dicts); refuses an empty one with a ValueError naming it."""
    if isinstance(params, torch.Tensor):
        raise TypeError(
            f"Invalid params: a single {type(params).__name__} "
            "(allowed: an iterable of tensors or of parameter-group dicts)"
        )
    items = []
    for item in params:
        if isinstance(item, dict):
            group = dict(item)
            group_params = group["params"]
            group["params"] = [group_params] if isinstance(group_params, torch.Tensor) else list(group_params)
            items.append(group)
        else:
            items.append(item)
    count = sum(len(item["params"]) if isinstance(item, dict) else 1 for item in items)
    if count == 0:
        fail("params", "[]", f"{optimizer} needs at least one parameter")
    return items


def all_params(param_groups: Iterable[dict]) -> list[torch.Tensor]:
    """Every parameter of every group, in order."""
    return [p for group in param_groups for p in group["params"]]


def check_params(params: list[torch.Tensor], optimizer: str) -> None:
    """A flat-vector optimizer needs at least one parameter, all on one device."""
    if not params:
        raise ValueError(f"Invalid params: [] (allowed: {optimizer} needs at least one parameter)")
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(f"Invalid params: on devices {sorted(map(str, devices))} (allowed: one device)")


def flat_params(params: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Concatenation of the parameters (a copy), optionally cast."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return flat if dtype is None else flat.to(dtype)


def flat_grads(params: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Concatenation of the gradients; a parameter without ``.grad`` contributes zeros."""
    pieces = [(p.grad.detach() if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    flat = torch.cat(pieces)
    return flat if dtype is None else flat.to(dtype)


def add_flat_(params: list[torch.Tensor], step: torch.Tensor) -> None:
    """x ← x + step, with ``step`` cast to each parameter's dtype."""
    offset = 0
    with torch.no_grad():
        for p in params:
            k = p.numel()
            p.add_(step[offset : offset + k].view_as(p).to(p.dtype))
            offset += k


def set_flat_(params: list[torch.Tensor], values: torch.Tensor) -> None:
    """x ← values."""
    offset = 0
    with torch.no_grad():
        for p in params:
            k = p.numel()
            p.copy_(values[offset : offset + k].view_as(p))
            offset += k
