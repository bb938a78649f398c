"""AdamQLR against computations written here: a line search of the damped loss, the explicit
Jacobian formula Jᵀ·∂²L/∂z²·J, the Levenberg–Marquardt rule, and trials on a real task."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.optimize import brentq

from lodo.adamqlr import AdamQLR, gauss_newton_quadratic, update_damping
from tasks.base import OutputBatch, output_loss
from tuner.trial import TrialSpec, run_trial

# torch's first forward-mode product loads its jvp decompositions through torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

_GEN = torch.Generator().manual_seed(7)
_M = torch.randn(5, 5, generator=_GEN, dtype=torch.float64)
A = _M @ _M.T / 5 + 0.5 * torch.eye(5, dtype=torch.float64)
B = torch.randn(5, generator=_GEN, dtype=torch.float64)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ A.to(x.dtype) @ x - B.to(x.dtype) @ x


def adam_first_direction(g: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Adam's bias-corrected direction at t = 1: m̂ = g, v̂ = g², so d = g/(|g| + ε)."""
    return g / (g.abs() + eps)


def line_minimiser(loss_along, damping: float, direction_sq: float) -> float:
    """argmin over α of loss(x + αd) + ½λα²‖d‖²: the root of its derivative along the line (by
    autograd on the true loss), found by Brent's method. A root of the derivative is accurate to
    machine precision, where minimising the loss values themselves stops at √ε."""

    def slope(a: float) -> float:
        alpha = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        damped = loss_along(alpha) + 0.5 * damping * alpha * alpha * direction_sq
        return float(torch.autograd.grad(damped, alpha)[0])

    low, high = -1.0, 1.0
    while slope(low) > 0 or slope(high) < 0:
        low, high = 2 * low, 2 * high
    return brentq(slope, low, high, xtol=1e-15, rtol=4 * torch.finfo(torch.float64).eps)


def test_learning_rate_minimises_the_damped_loss_along_d_on_a_quadratic():
    # On a quadratic the Hessian model is exact, so α must be the line minimiser of the damped loss.
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64)
    x = torch.nn.Parameter(x0.clone())
    opt = AdamQLR([x], damping=0.3, curvature="hessian")
    opt.step(lambda: quadratic(x))
    g = A @ x0 - B
    d = adam_first_direction(g)
    alpha = line_minimiser(lambda a: quadratic(x0 + a * d), 0.3, float(d @ d))
    torch.testing.assert_close(x.detach(), x0 + alpha * d, rtol=1e-10, atol=1e-12)
    assert opt.state[x]["learning_rate"] == pytest.approx(-alpha, rel=1e-10)


def test_fisher_learning_rate_on_a_linear_least_squares_model():
    # A linear model under ½MSE has Gauss–Newton = Hessian: the Fisher α is the exact line minimiser.
    torch.manual_seed(11)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    inputs = torch.randn(16, 3, generator=_GEN, dtype=torch.float64)
    targets = torch.randn(16, 1, generator=_GEN, dtype=torch.float64)
    batch = OutputBatch(model, inputs, targets, "half-mse")
    start = [p.detach().clone() for p in model.parameters()]
    opt = AdamQLR(model.parameters(), damping=0.05)
    opt.step(batch.evaluate, batch=batch)

    def loss_at(values):
        weight, bias = values
        return output_loss("half-mse", inputs @ weight.T + bias, targets)

    twin = _with(model, start)
    grads = torch.autograd.grad(output_loss("half-mse", twin(inputs), targets), list(twin.parameters()))
    directions = [adam_first_direction(g) for g in grads]
    direction_sq = sum(float(d.square().sum()) for d in directions)
    alpha = line_minimiser(
        lambda a: loss_at([s + a * d for s, d in zip(start, directions, strict=True)]), 0.05, direction_sq
    )
    for p, s, d in zip(model.parameters(), start, directions, strict=True):
        torch.testing.assert_close(p.detach(), s + alpha * d, rtol=1e-10, atol=1e-12)
    assert opt.state[model.weight]["curvature"] == "fisher"


def _with(model: torch.nn.Module, values: list[torch.Tensor]) -> torch.nn.Module:
    """A copy of ``model`` holding ``values`` as its parameters."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, v in zip(twin.parameters(), values, strict=True):
            p.copy_(v)
    return twin


@pytest.mark.parametrize("loss", ["cross-entropy", "half-mse"])
def test_gauss_newton_quadratic_equals_the_explicit_jacobian_formula(loss):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    inputs = torch.randn(5, 3, dtype=torch.float64)
    targets = torch.randint(3, (5,)) if loss == "cross-entropy" else torch.randn(5, 3, dtype=torch.float64)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def unflatten(flat):
        pieces = flat.split([s.numel() for s in shapes])
        return {
            name: piece.view(shape)
            for (name, _), piece, shape in zip(model.named_parameters(), pieces, shapes, strict=True)
        }

    def outputs_of(flat):
        return torch.func.functional_call(model, unflatten(flat), (inputs,)).reshape(-1)

    jacobian = torch.autograd.functional.jacobian(outputs_of, flat0)  # (N·K, n)
    z = outputs_of(flat0)
    output_hessian = torch.autograd.functional.hessian(
        lambda flat_z: output_loss(loss, flat_z.view(5, 3), targets), z
    )  # (N·K, N·K)
    gauss_newton = jacobian.T @ output_hessian @ jacobian
    batch = OutputBatch(model, inputs, targets, loss)
    for seed in range(3):
        v = torch.randn(flat0.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        pieces = [
            piece.view(shape)
            for piece, shape in zip(v.split([s.numel() for s in shapes]), shapes, strict=True)
        ]
        assert float(gauss_newton_quadratic(batch, params, pieces)) == pytest.approx(
            float(v @ gauss_newton @ v), rel=1e-10
        )


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.9, 0.5),  # ρ > 3/4: × ω_dec
        (0.75, 1.0),  # the thresholds themselves leave λ alone
        (0.5, 1.0),
        (0.25, 1.0),
        (0.1, 2.0),  # ρ < 1/4: × ω_inc
        (-3.0, 2.0),
        (math.nan, 1.0),  # no predicted change
    ],
)
def test_damping_rule_on_constructed_ratios(ratio, expected):
    assert update_damping(1.0, ratio, decrease=0.5, increase=2.0, minimum=1e-8) == expected


def test_damping_floor():
    assert update_damping(1.5e-8, 1.0, decrease=0.5, increase=2.0, minimum=1e-8) == 1e-8


def test_damping_moves_with_the_second_evaluation_of_the_closure():
    # Exact model (quadratic, Hessian curvature): ρ ≈ 1, λ shrinks. A closure whose second
    # evaluation reports a higher loss makes ρ < 0, λ grows. Equal factors of 1 fix λ.
    def run(second_evaluation_offset: float, **options) -> tuple[float, int]:
        x = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
        calls = []

        def closure():
            calls.append(None)
            loss = quadratic(x)
            return loss + second_evaluation_offset if len(calls) == 2 else loss

        opt = AdamQLR([x], damping=0.01, curvature="hessian", **options)
        opt.step(closure)
        return opt.state[x]["damping"], len(calls)

    assert run(0.0) == (0.005, 2)
    assert run(100.0) == (0.02, 2)
    assert run(100.0, damping_decrease=1.0, damping_increase=1.0) == (0.01, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"damping": 0.0}, r"Invalid damping: 0\.0 \(allowed: a finite number > 0\)"),
        ({"damping": -1.0}, r"Invalid damping: -1\.0"),
        ({"damping": math.nan}, r"Invalid damping: nan"),
        ({"damping_decrease": 0.0}, r"Invalid damping_decrease: 0\.0 \(allowed: a number in \(0, 1\]\)"),
        ({"damping_decrease": 1.5}, r"Invalid damping_decrease: 1\.5"),
        ({"damping_increase": 0.5}, r"Invalid damping_increase: 0\.5 \(allowed: a finite number >= 1\)"),
        ({"min_damping": -1e-8}, r"Invalid min_damping"),
        ({"betas": (0.9, 1.0)}, r"Invalid betas\[1\]: 1\.0"),
        ({"eps": -1.0}, r"Invalid eps"),
        ({"curvature": "kfac"}, r"Invalid curvature: 'kfac' \(allowed: fisher \| hessian \| auto\)"),
    ],
)
def test_bad_hyperparameters_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        AdamQLR([torch.nn.Parameter(torch.zeros(2))], **options)


def test_missing_closure_or_batch_are_clear_errors():
    x = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"Invalid closure: None \(allowed: AdamQLR\.step needs a closure"):
        AdamQLR([x]).step()
    with pytest.raises(
        ValueError, match=r"Invalid batch: None \(allowed: an OutputBatch .* curvature='fisher'"
    ):
        AdamQLR([x]).step(lambda: x.square().sum())
    with pytest.raises(ValueError, match=r"Invalid closure: its return value"):
        AdamQLR([x], curvature="hessian").step(lambda: 1.0)


def test_auto_curvature_uses_the_batch_when_there_is_one():
    model = torch.nn.Linear(2, 1, dtype=torch.float64)
    batch = OutputBatch(
        model, torch.ones(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64), "half-mse"
    )
    opt = AdamQLR(model.parameters(), curvature="auto")
    opt.step(batch.evaluate, batch=batch)
    assert opt.state[model.weight]["curvature"] == "fisher"
    opt.step(batch.evaluate)
    assert opt.state[model.weight]["curvature"] == "hessian"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trial_on_digits_reduces_the_loss(dtype):
    spec = TrialSpec(
        "digits-mlp", "adamqlr", {}, seed=0, steps=21, task_options={"batch_size": 500, "dtype": dtype}
    )
    result = run_trial(spec)
    assert not result.diverged
    assert len(result.losses) == 21  # 10 steps of two evaluations, then one plain evaluation
    assert max(result.losses[-4:]) < 0.5 * result.losses[0]
    assert result.metrics["validation_accuracy"] > 0.8


def test_state_dict_round_trip_continues_identically():
    def problem():
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        inputs, targets = torch.randn(32, 4), torch.randint(3, (32,))
        return model, OutputBatch(model, inputs, targets, "cross-entropy")

    model, batch = problem()
    opt = AdamQLR(model.parameters())
    for _ in range(3):
        opt.step(batch.evaluate, batch=batch)
    saved = copy.deepcopy(opt.state_dict())
    twin_model, twin_batch = problem()
    twin_model.load_state_dict(model.state_dict())
    twin = AdamQLR(twin_model.parameters())
    twin.load_state_dict(saved)
    assert twin.state[twin_model[0].weight]["damping"] == opt.state[model[0].weight]["damping"]
    for _ in range(2):
        opt.step(batch.evaluate, batch=batch)
        twin.step(twin_batch.evaluate, batch=twin_batch)
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
