"""The first-order baselines as population optimizers: P members, each with its own values.

torch's foreach and fused kernels take one scalar learning rate per call, so each update here is
the per-trial arithmetic written once over ``[P, n]`` with every hyperparameter a ``[P, 1]``
column. What matches, member by member (tests/lodo/test_population_baselines.py, to rounding):

* ``adam``: :class:`lodo.baselines.keras_adam.KerasAdam`, i.e. torch's single-tensor Adam with
  ε_t = ε/√(1−β₂ᵗ): m ← lerp(m, g, 1−β₁), v ← β₂v + (1−β₂)g², x ← x − lr/(1−β₁ᵗ)·m/(√v/√(1−β₂ᵗ) + ε_t);
* ``momentum`` and ``sgd``: ``torch.optim.SGD`` with dampening 0 (the buffer starts as g, which
  is μ·0 + g), coupled weight decay g ← g + ξx for ``sgd``;
* ``rmsprop``: :class:`lodo.baselines.keras_rmsprop.KerasRMSprop` — ε outside √v without
  momentum, inside √(v + ε) with it, chosen per member;
* ``yogi``: :class:`lodo.baselines.yogi.PaperYogi` (no bias correction, ε = 1e-3).

None of them checks gradients (as the per-trial classes): a non-finite gradient makes the
member's parameters non-finite, and its next loss marks it diverged. Nothing is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .base import PopulationOptimizer, member_values

__all__ = ["BASELINES"]

KERAS_EPS = 1e-7  # KerasAdam's and KerasRMSprop's default
YOGI_EPS = 1e-3  # PaperYogi's


class _FirstOrder(PopulationOptimizer):
    """Hyperparameters as ``[P, 1]`` columns of the parameters' dtype; ``slots`` zero state tensors."""

    names: tuple[str, ...] = ()
    slots: tuple[str, ...] = ()

    def __init__(self, params: torch.Tensor, values: Sequence[Mapping[str, float]]) -> None:
        super().__init__()
        for name in self.names:
            self.hyper[name] = member_values(values, name, params).unsqueeze(1)
        for slot in self.slots:
            self.state[slot] = torch.zeros_like(params)

    def step(self, params: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        self._update(params, grads.to(params.dtype))
        return torch.zeros(params.shape[0], dtype=torch.bool, device=params.device)

    def _update(self, params: torch.Tensor, grads: torch.Tensor) -> None:
        raise NotImplementedError


class PopulationKerasAdam(_FirstOrder):
    names = ("lr", "beta1", "beta2")
    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: torch.Tensor, values: Sequence[Mapping[str, float]]) -> None:
        super().__init__(params, values)
        self._complements()

    def _after_keep(self, index: torch.Tensor) -> None:
        super()._after_keep(index)
        self._complements()

    def _complements(self) -> None:
        # 1 − β once, not per step: the same values, two fewer kernels of a call-bound step
        self.one_minus = {name: 1 - self.hyper[name] for name in ("beta1", "beta2")}

    def _update(self, x, g):
        h, m, v, t = self.hyper, self.state["exp_avg"], self.state["exp_avg_sq"], self.steps
        m.lerp_(g, self.one_minus["beta1"])
        v.mul_(h["beta2"]).addcmul_(g, g * self.one_minus["beta2"])
        bias1 = 1 - h["beta1"] ** t
        bias2_sqrt = (1 - h["beta2"] ** t).sqrt()
        eps = KERAS_EPS / bias2_sqrt  # torch's ε that gives Keras' (lodo.baselines.keras_adam)
        denom = v.sqrt().div_(bias2_sqrt).add_(eps).mul_(bias1 / h["lr"])
        x.addcdiv_(m, denom, value=-1.0)


class PopulationSGD(_FirstOrder):
    """Heavy-ball SGD; with ``weight_decay`` among the names, coupled weight decay."""

    names = ("lr", "momentum")
    slots = ("momentum_buffer",)

    def _update(self, x, g):
        h, buf = self.hyper, self.state["momentum_buffer"]
        if "weight_decay" in h:
            g = g.add(x * h["weight_decay"])
        buf.mul_(h["momentum"]).add_(g)
        x.sub_(buf * h["lr"])


class PopulationCoupledSGD(PopulationSGD):
    names = ("lr", "momentum", "weight_decay")


class PopulationKerasRMSprop(_FirstOrder):
    names = ("lr", "rho", "momentum")
    slots = ("square_avg", "momentum_buffer")

    def _update(self, x, g):
        h, v, buf = self.hyper, self.state["square_avg"], self.state["momentum_buffer"]
        v.mul_(h["rho"]).addcmul_(g, g * (1 - h["rho"]))
        with_momentum = h["momentum"] > 0
        # momentum > 0: buf ← μ·buf + lr·g/√(v + ε); x ← x − buf (TF's kernel)
        new_buf = torch.where(with_momentum, buf * h["momentum"] + g * h["lr"] / (v + KERAS_EPS).sqrt(), buf)
        # momentum = 0: x ← x − lr·g/(√v + ε)
        plain = g * h["lr"] / (v.sqrt() + KERAS_EPS)
        buf.copy_(new_buf)
        x.sub_(torch.where(with_momentum, new_buf, plain))


class PopulationPaperYogi(_FirstOrder):
    names = ("lr", "beta1", "beta2")
    slots = ("exp_avg", "exp_avg_sq")

    def _update(self, x, g):
        h, m, v = self.hyper, self.state["exp_avg"], self.state["exp_avg_sq"]
        m.mul_(h["beta1"]).add_(g * (1 - h["beta1"]))
        g2 = g * g
        v.sub_((v - g2).sign_() * g2 * (1 - h["beta2"]))
        x.sub_(m * h["lr"] / (v.sqrt() + YOGI_EPS))


def _builder(cls: type[_FirstOrder]) -> Callable[..., PopulationOptimizer]:
    def build(params: torch.Tensor, values, *, seeds) -> PopulationOptimizer:
        del seeds  # nothing random
        return cls(params, values)

    return build


BASELINES: dict[str, Callable[..., PopulationOptimizer]] = {
    "adam": _builder(PopulationKerasAdam),
    "momentum": _builder(PopulationSGD),
    "sgd": _builder(PopulationCoupledSGD),
    "rmsprop": _builder(PopulationKerasRMSprop),
    "yogi": _builder(PopulationPaperYogi),
}
