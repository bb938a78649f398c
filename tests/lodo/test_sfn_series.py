"""Series saddle-free Newton against computations written here: the eigendecomposition value of
(|H| + λI)⁻¹g, the reference's coefficient recursion, closed-form Shanks transforms, and trials;
the registered unadaptive variant against SeriesSFN with fixed damping and dense steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import lodo
import tasks
from lodo.sfn_series import (
    SeriesSFN,
    SeriesSFNUnadaptive,
    series_coefficients,
    series_sfn_direction,
    wynn_epsilon,
)
from tuner.trial import TrialSpec, run_trial, train

# A small indefinite H = Q diag(h) Qᵀ and a gradient, in float64.
EIGENVALUES = torch.tensor([-3.0, -1.2, -0.6, 0.7, 1.5, 2.5], dtype=torch.float64)
_Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
H = _Q @ torch.diag(EIGENVALUES) @ _Q.T
G = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def saddle_free_newton(damping: float) -> torch.Tensor:
    """(|H| + λI)⁻¹g from the eigendecomposition."""
    return _Q @ ((_Q.T @ G) / (EIGENVALUES.abs() + damping))


def series(terms: int, acceleration_order: int, *, scale: float = 10.0, damping: float = 0.1):
    return series_sfn_direction(
        G,
        lambda v: H @ (H @ v),
        scale=scale,
        damping=damping,
        terms=terms,
        acceleration_order=acceleration_order,
    )


def test_series_converges_to_the_saddle_free_newton_step():
    direction, scale, fell_back = series(600, 0)
    torch.testing.assert_close(direction, saddle_free_newton(0.1), rtol=1e-9, atol=1e-12)
    assert scale == 10.0  # ‖H²g‖/‖g‖ <= λ_max(H²) = 6.25 < V₀: the running max keeps V₀
    assert not fell_back


def test_scale_takes_the_lower_bound_when_it_is_larger():
    _, scale, _ = series(3, 0, scale=1.0)
    assert scale == pytest.approx(float((H @ H @ G).norm() / G.norm()), rel=1e-12)


def test_acceleration_beats_the_plain_partial_sum():
    exact = saddle_free_newton(0.1)
    plain = float((series(25, 0)[0] - exact).norm())
    accelerated = float((series(25, 3)[0] - exact).norm())
    assert accelerated < 0.1 * plain


def test_one_term_is_the_gradient_over_the_root_of_the_scale():
    direction, scale, _ = series(1, 0, scale=100.0)
    torch.testing.assert_close(direction, G / 10.0)
    assert scale == 100.0  # no product computed, V not updated (as the reference)


@pytest.mark.parametrize("delta", [0.0, 0.01, 0.3])
def test_coefficients_match_the_reference_recursion(delta):
    # The reference: c₀ = 1/(1 + δ), cₖ = (cₖ₋₁ + bₖ)/(1 − δ²), bₖ = (−1)ᵏ·binom(1/2, k).
    expected = [1 / (1 + delta)]
    for k in range(1, 30):
        binom = math.prod(0.5 - j for j in range(k)) / math.factorial(k)
        expected.append((expected[-1] + (-1) ** k * binom) / (1 - delta**2))
    assert series_coefficients(30, delta) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("delta", [0.1, 1.0, 3.0])  # δ >= 1 breaks the reference's recursion, not this one
def test_coefficients_sum_to_the_function(delta):
    x = 0.5
    total = sum(c * x**k for k, c in enumerate(series_coefficients(80, delta)))
    assert total == pytest.approx(1 / (delta + math.sqrt(1 - x)), rel=1e-12)


def test_wynn_epsilon_is_exact_on_a_geometric_sequence():
    limit = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w = torch.tensor([0.3, 0.1, -0.7], dtype=torch.float64)
    sums = [limit + 0.8**k * w for k in range(3)]
    torch.testing.assert_close(wynn_epsilon(sums), limit)


def test_wynn_epsilon_with_the_sablonniere_modifier():
    def inv(v):
        return v / (v @ v)

    s0, s1, s2 = (
        torch.randn(4, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(3)
    )
    plain = s1 + inv(inv(s2 - s1) - inv(s1 - s0))
    scaled = s1 + 2 * inv(inv(s2 - s1) - inv(s1 - s0))  # column s = 2 scales its inverse by ⌊2/2⌋ + 1
    torch.testing.assert_close(wynn_epsilon([s0, s1, s2]), plain)
    torch.testing.assert_close(wynn_epsilon([s0, s1, s2], sablonniere=True), scaled)


def test_wynn_epsilon_gives_up_on_a_vanishing_difference():
    s = torch.ones(3, dtype=torch.float64)
    assert wynn_epsilon([s, s * 2, s * 2]) is None


def quadratic_problem(dtype=torch.float64, **options):
    """loss(x) = ½xᵀHx + gᵀx from x₀ = 0, where the gradient is g."""
    x = torch.nn.Parameter(torch.zeros(6, dtype=dtype))
    opt = SeriesSFN([x], **options)

    def closure():
        return 0.5 * x @ H.to(dtype) @ x + G.to(dtype) @ x

    return x, opt, closure


def test_step_takes_the_series_direction_and_adapts_the_damping():
    # The model assumes curvature |H| + λI; along H's negative eigenvalues the loss falls faster
    # than predicted, so ρ > 3/4 and λ shrinks by the factor.
    x, opt, closure = quadratic_problem(damping=1e-3, terms=600, acceleration_order=0, initial_scale=10.0)
    opt.step(closure)
    torch.testing.assert_close(x.detach(), -saddle_free_newton(1e-3), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(x.grad, G)
    assert opt.state[x]["damping"] == pytest.approx(0.9e-3)
    assert opt.state[x]["step"] == 1


def test_unadaptive_momentum_adds_the_previous_update():
    x, opt, closure = quadratic_problem(
        lr=0.5, momentum=0.5, damping=0.1, damping_factor=1.0, terms=5, acceleration_order=1
    )
    calls = []

    def counted():
        calls.append(None)
        return closure()

    opt.step(counted)
    first = x.detach().clone()
    opt.step(counted)
    assert len(calls) == 2  # one evaluation per step when the damping is fixed
    hessian_gradient = H @ first + G
    series_step, _, _ = series_sfn_direction(
        hessian_gradient,
        lambda v: H @ (H @ v),
        scale=100.0,
        damping=0.1,
        terms=5,
        acceleration_order=1,
    )
    torch.testing.assert_close(x.detach(), first - 0.5 * series_step + 0.5 * first)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"terms": 0}, r"Invalid terms: 0 \(allowed: an integer >= 1\)"),
        ({"terms": 2.5}, r"Invalid terms: 2\.5"),
        ({"terms": 5, "acceleration_order": 3}, r"Invalid acceleration_order: 3 \(allowed: .* \[0, 2\]"),
        ({"acceleration_order": -1}, r"Invalid acceleration_order: -1"),
        ({"damping": 0.0}, r"Invalid damping: 0\.0 \(allowed: a finite number > 0\)"),
        ({"damping": -1.0}, r"Invalid damping: -1\.0"),
        ({"damping_factor": 0.0}, r"Invalid damping_factor: 0\.0 \(allowed: a number in \(0, 1\]\)"),
        ({"damping_factor": 1.1}, r"Invalid damping_factor: 1\.1"),
        ({"momentum": 0.5}, r"Invalid momentum: 0\.5 \(allowed: 0 when damping_factor < 1"),
        (
            {"momentum": 1.0, "damping_factor": 1.0},
            r"Invalid momentum: 1\.0 \(allowed: a number in \[0, 1\)\)",
        ),
        ({"lr": -1.0}, r"Invalid lr: -1\.0"),
        ({"initial_scale": 0.0}, r"Invalid initial_scale: 0\.0"),
        ({"min_damping": -1.0}, r"Invalid min_damping"),
    ],
)
def test_bad_hyperparameters_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        SeriesSFN([torch.nn.Parameter(torch.zeros(2))], **options)


def test_missing_closure_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Invalid closure: None \(allowed: SeriesSFN\.step needs a closure"):
        SeriesSFN([torch.nn.Parameter(torch.zeros(2))]).step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trial_on_digits_reduces_the_loss(dtype):
    spec = TrialSpec(
        "digits-mlp",
        "sfn-series",
        {"terms": 5, "acceleration_order": 1},
        seed=0,
        steps=20,
        task_options={"batch_size": 200, "dtype": dtype},
    )
    result = run_trial(spec)
    assert not result.diverged
    assert len(result.losses) == 20
    assert max(result.losses[-4:]) < 0.5 * result.losses[0]
    assert result.metrics["validation_accuracy"] > 0.7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_round_trip_continues_identically(dtype):
    options = dict(lr=0.5, momentum=0.3, damping=0.2, damping_factor=1.0, terms=4, acceleration_order=1)
    x, opt, closure = quadratic_problem(dtype, **options)
    for _ in range(2):
        opt.step(closure)
    saved = copy.deepcopy(opt.state_dict())
    y, twin, twin_closure = quadratic_problem(dtype, **options)
    with torch.no_grad():
        y.copy_(x)
    twin.load_state_dict(saved)
    assert twin.state[y]["previous_update"].dtype == dtype
    for _ in range(2):
        opt.step(closure)
        twin.step(twin_closure)
    torch.testing.assert_close(x, y, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# The registered unadaptive variant (sfn-series-unadaptive: the paper's "Ours (Damped Unadaptive)")


# A non-convex f(x) = ½xᵀAx + bᵀx + Σxᵢ⁴/24 on R⁵: A indefinite, so H(x) = A + diag(x²)/2 is
# indefinite along the steps taken here, and it changes from step to step.
_Q5, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
A5 = _Q5 @ torch.diag(torch.tensor([-2.0, -1.0, 0.8, 1.5, 2.5], dtype=torch.float64)) @ _Q5.T
B5 = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def nonconvex(x):
    return 0.5 * x @ A5 @ x + B5 @ x + x.pow(4).sum() / 24


def dense_hessian(x):
    return torch.autograd.functional.hessian(nonconvex, x.detach())


def dense_gradient(x):
    return torch.func.grad(nonconvex)(x.detach())


def dense_saddle_free_newton_step(x, damping):
    """x − (|H| + λI)⁻¹∇f(x), |H| from the eigendecomposition of the dense Hessian at x."""
    eigenvalues, vectors = torch.linalg.eigh(dense_hessian(x))
    assert eigenvalues.min() < -0.5 and eigenvalues.abs().min() > 0.5  # indefinite, no tiny |h|
    return x - vectors @ ((vectors.T @ dense_gradient(x)) / (eigenvalues.abs() + damping))


def trajectory(optimizer_for, steps=3):
    """The iterates of ``steps`` steps from x₀ = 0 on :func:`nonconvex`, the optimizer's state and
    the number of closure calls."""
    x = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = optimizer_for([x])
    calls = []

    def closure():
        calls.append(None)
        return nonconvex(x)

    iterates = []
    for _ in range(steps):
        opt.step(closure)
        iterates.append(x.detach().clone())
    return iterates, opt.state[x], len(calls)


def test_registered_unadaptive_takes_the_fixed_damping_series_and_the_dense_steps():
    # α = 1, μ = 0, a = 0 and many terms: each step is x − (|H(x)| + λI)⁻¹∇f(x) for the fixed λ.
    # V₀ = 20 >= λ_max(H²)/2 along the path, and (1 − h²/V)^K is ~e^-25 for the smallest |h|.
    damping, terms = 0.1, 800
    values = {"lr": 1.0, "momentum": 0.0, "damping": damping, "terms": terms, "acceleration_order": 0}
    registered, state, calls = trajectory(
        lambda ps: lodo.build("sfn-series-unadaptive", ps, values, initial_scale=20.0)
    )
    direct, direct_state, _ = trajectory(
        lambda ps: SeriesSFN(
            ps,
            lr=1.0,
            damping=damping,
            terms=terms,
            acceleration_order=0,
            damping_factor=1,
            initial_scale=20.0,
        )
    )
    for mine, theirs in zip(registered, direct, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    dense = [torch.zeros(5, dtype=torch.float64)]
    for _ in range(3):
        dense.append(dense_saddle_free_newton_step(dense[-1], damping))
    for mine, expected in zip(registered, dense[1:], strict=True):
        torch.testing.assert_close(mine, expected, rtol=1e-10, atol=1e-12)
    assert calls == 3  # one loss evaluation per step: no second evaluation for ρ
    assert state["damping"] == direct_state["damping"] == damping  # λ never changes
    assert state["scale"] == 20.0 and state["step"] == 3


def test_registered_unadaptive_defaults_and_class():
    spec = lodo.get("sfn-series-unadaptive")
    assert spec.defaults == {
        "lr": 1.0,
        "momentum": 0.5,
        "damping": 1e-4,
        "terms": 20,
        "acceleration_order": 1,
    }
    assert (spec.evaluation, spec.learning_rate) == ("loss", "lr")
    opt = spec.build([torch.nn.Parameter(torch.zeros(2))])
    assert type(opt) is SeriesSFNUnadaptive and isinstance(opt, SeriesSFN)
    assert opt.param_groups[0]["damping_factor"] == 1.0


def test_registered_unadaptive_momentum_is_heavy_ball_on_the_update():
    # u_t = lr·Δ_t + μ·u_{t−1}, x_{t+1} = x_t − u_t, Δ_t the series direction at x_t (V carried);
    # μ is the registry default 0.5.
    lr, damping, terms, order = 0.7, 0.1, 5, 1
    values = {"lr": lr, "damping": damping, "terms": terms, "acceleration_order": order}
    with_momentum, _, calls = trajectory(lambda ps: lodo.build("sfn-series-unadaptive", ps, values))
    without, _, _ = trajectory(
        lambda ps: lodo.build("sfn-series-unadaptive", ps, {**values, "momentum": 0.0})
    )
    x, update, scale = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), 100.0
    for mine in with_momentum:
        hessian = dense_hessian(x)
        direction, scale, _ = series_sfn_direction(
            dense_gradient(x),
            lambda v, h=hessian: h @ (h @ v),
            scale=scale,
            damping=damping,
            terms=terms,
            acceleration_order=order,
        )
        update = lr * direction + 0.5 * update
        x = x - update
        torch.testing.assert_close(mine, x, rtol=1e-12, atol=1e-14)
    assert calls == 3
    torch.testing.assert_close(with_momentum[0], without[0], rtol=0, atol=0)  # no u₀ yet
    assert float((with_momentum[1] - without[1]).norm()) > 1e-3  # then μ·u_{t−1} moves the step


def test_registered_unadaptive_step_costs_one_evaluation_in_a_trial():
    # the registry's evaluation mode, as the trial runner uses it: a budget of 5 evaluations is 5
    # steps (the adaptive variant's same-batch pairs fit 2, and its 5th evaluation is no step)
    for name, steps in (("sfn-series-unadaptive", 5), ("sfn-series", 2)):
        task = tasks.build("rosenbrock", seed=0)
        opt = lodo.build(name, task.parameters(), {"terms": 3})
        losses: list[float] = []
        assert sum(1 for _ in train(task, opt, lodo.get(name).evaluation, 5, losses)) == steps, name
        assert len(losses) == 5
        assert opt.state[opt.param_groups[0]["params"][0]]["step"] == steps


def test_unadaptive_class_validates_as_series_sfn():
    with pytest.raises(ValueError, match=r"Invalid momentum: 1\.0 \(allowed: a number in \[0, 1\)\)"):
        SeriesSFNUnadaptive([torch.nn.Parameter(torch.zeros(2))], momentum=1.0)
    with pytest.raises(ValueError, match=r"Invalid closure: None \(allowed: SeriesSFNUnadaptive\.step needs"):
        SeriesSFNUnadaptive([torch.nn.Parameter(torch.zeros(2))]).step()
