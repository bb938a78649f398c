"""Series saddle-free Newton against computations written here: the eigendecomposition value of
(|H| + λI)⁻¹g, the reference's coefficient recursion, closed-form Shanks transforms, and trials."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lodo.sfn_series import SeriesSFN, series_coefficients, series_sfn_direction, wynn_epsilon
from tuner.trial import TrialSpec, run_trial

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
