"""The paper's baselines, each checked against a computation written here from its formula.

Problems: a float64 quadratic ½xᵀAx − bᵀx (A a fixed random SPD matrix, x split over two tensors so
that flattening is exercised) and the rescaled Rosenbrock f = 0.01(1 − x)² + (y − x²)² from
(−0.5, 2). The numpy references below never call the classes under test.
"""

from __future__ import annotations

import copy
import inspect
import math

import numpy as np
import pytest
import pytorch_optimizer
import torch

import lodo
from lodo import baselines
from lodo.baselines import (
    BFGS,
    KerasAdam,
    KerasRMSprop,
    LevenbergMarquardt,
    Newton,
    OnlineLBFGS,
    PaperLARS,
    PaperYogi,
    SchraudolphLBFGS,
)
from lodo.baselines.bfgs import bfgs_update_
from lodo.baselines.keras_adam import torch_eps
from lodo.baselines.lbfgs import lbfgs_direction

# ---------------------------------------------------------------------------------------------
# Problems and their numpy derivatives

_RNG = np.random.default_rng(1234)
_M = _RNG.standard_normal((5, 5))
A = _M @ _M.T / 5 + 0.5 * np.eye(5)
B = _RNG.standard_normal(5)
X0_QUAD = np.array([0.7, -1.2, 0.3, 2.0, -0.4])
SHAPES_QUAD = [(2, 2), (1,)]
X0_ROSEN = np.array([-0.5, 2.0])
SHAPES_ROSEN = [(1,), (1,)]


def quad_grad(x):
    return A @ x - B


def rosen_grad(x):
    u, v = x
    return np.array([-0.02 * (1 - u) - 4 * u * (v - u**2), 2 * (v - u**2)])


def rosen_hess(x):
    u, v = x
    return np.array([[0.02 - 4 * v + 12 * u**2, -4 * u], [-4 * u, 2.0]])


def make_params(x0, shapes, dtype=torch.float64):
    flat = torch.tensor(x0, dtype=dtype)
    params, offset = [], 0
    for shape in shapes:
        k = math.prod(shape)
        params.append(flat[offset : offset + k].reshape(shape).clone().requires_grad_(True))
        offset += k
    return params


def flat(params):
    return torch.cat([p.detach().reshape(-1) for p in params]).double().numpy()


def quad_loss(params):
    x = torch.cat([p.reshape(-1) for p in params])
    a = torch.tensor(A, dtype=x.dtype)
    return 0.5 * x @ a @ x - torch.tensor(B, dtype=x.dtype) @ x


def rosen_loss(params):
    u, v = params[0][0], params[1][0]
    return 0.01 * (1 - u) ** 2 + (v - u**2) ** 2


PROBLEMS = {
    "quadratic": (X0_QUAD, SHAPES_QUAD, quad_loss, quad_grad),
    "rosenbrock": (X0_ROSEN, SHAPES_ROSEN, rosen_loss, rosen_grad),
}


def backward(params, loss_fn):
    for p in params:
        p.grad = None
    loss = loss_fn(params)
    loss.backward()
    return loss


def run_first_order(opt, params, loss_fn, steps):
    """The training loop of a first-order optimizer; returns x after each step."""
    trajectory = []
    for _ in range(steps):
        backward(params, loss_fn)
        opt.step()
        trajectory.append(flat(params))
    return np.array(trajectory)


def assert_trajectory(actual, expected, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(actual, np.array(expected), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Keras Adam


def keras_adam_reference(x, grad_fn, steps, lr, b1, b2, eps):
    m, v, out = np.zeros_like(x), np.zeros_like(x), []
    for t in range(1, steps + 1):
        g = grad_fn(x)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        out.append(x)
    return out


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_keras_adam_matches_keras_formula(problem):
    x0, shapes, loss_fn, grad_fn = PROBLEMS[problem]
    kwargs = {"lr": 0.05, "betas": (0.8, 0.9), "eps": 0.3}  # a large ε makes the convention visible
    params = make_params(x0, shapes)
    actual = run_first_order(KerasAdam(params, **kwargs), params, loss_fn, 3)
    assert_trajectory(actual, keras_adam_reference(x0, grad_fn, 3, 0.05, 0.8, 0.9, 0.3))
    # torch's own ε convention gives something else: the test can tell them apart.
    params = make_params(x0, shapes)
    plain = run_first_order(torch.optim.Adam(params, **kwargs), params, loss_fn, 3)
    assert not np.allclose(plain, actual, rtol=1e-6)


def test_keras_adam_equals_torch_adam_with_per_step_eps():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    ours = KerasAdam(params, lr=0.05, eps=0.01)
    twins = make_params(X0_QUAD, SHAPES_QUAD)
    torch_adam = torch.optim.Adam(twins, lr=0.05, eps=0.01)
    for t in (1, 2, 3):
        backward(params, quad_loss)
        ours.step()
        backward(twins, quad_loss)
        torch_adam.param_groups[0]["eps"] = 0.01 / math.sqrt(1 - 0.999**t)
        torch_adam.step()
        for p, q in zip(params, twins, strict=True):
            assert torch.equal(p, q)
        assert ours.param_groups[0]["eps"] == 0.01  # the Keras ε is what the group shows
    assert torch_eps(0.01, 0.999, 3) == 0.01 / math.sqrt(1 - 0.999**3)


def test_keras_adam_closure_is_called_before_reading_the_step():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = KerasAdam(params, lr=0.05, eps=0.3)
    twins = make_params(X0_QUAD, SHAPES_QUAD)
    expected = run_first_order(KerasAdam(twins, lr=0.05, eps=0.3), twins, quad_loss, 3)
    actual = []
    for _ in range(3):
        for p in params:
            p.grad = None
        loss = opt.step(lambda: backward(params, quad_loss))
        assert loss is not None
        actual.append(flat(params))
    np.testing.assert_array_equal(np.array(actual), expected)


# ---------------------------------------------------------------------------------------------
# Keras RMSprop and Momentum


def keras_rmsprop_reference(x, grad_fn, steps, lr, rho, momentum, eps):
    v, buf, out = np.zeros_like(x), np.zeros_like(x), []
    for _ in range(steps):
        g = grad_fn(x)
        v = rho * v + (1 - rho) * g * g
        if momentum > 0:
            buf = momentum * buf + lr * g / np.sqrt(v + eps)
            x = x - buf
        else:
            x = x - lr * g / (np.sqrt(v) + eps)
        out.append(x)
    return out


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_keras_rmsprop_matches_keras_formula(problem, momentum):
    x0, shapes, loss_fn, grad_fn = PROBLEMS[problem]
    params = make_params(x0, shapes)
    opt = KerasRMSprop(params, lr=0.02, rho=0.8, momentum=momentum, eps=0.05)
    actual = run_first_order(opt, params, loss_fn, 3)
    assert_trajectory(actual, keras_rmsprop_reference(x0, grad_fn, 3, 0.02, 0.8, momentum, 0.05))


def test_keras_rmsprop_without_momentum_equals_torch_rmsprop():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    ours = run_first_order(KerasRMSprop(params, lr=0.02, rho=0.8, eps=0.05), params, quad_loss, 3)
    twins = make_params(X0_QUAD, SHAPES_QUAD)
    torch_rms = torch.optim.RMSprop(twins, lr=0.02, alpha=0.8, eps=0.05)
    assert_trajectory(ours, run_first_order(torch_rms, twins, quad_loss, 3))


def test_keras_rmsprop_accepts_rho_above_one_and_diverges():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = KerasRMSprop(params, rho=1.5)  # the GA's log-space sampling produces such values
    run_first_order(opt, params, quad_loss, 1)
    assert not all(torch.isfinite(p).all() for p in params)  # v < 0 → √v = NaN: a diverged trial


def test_momentum_is_torch_sgd_with_zero_dampening():
    lr, mu = 0.05, 0.8
    params = make_params(X0_ROSEN, SHAPES_ROSEN)
    sgd = torch.optim.SGD(params, lr=lr, momentum=mu, dampening=0, nesterov=False)
    actual = run_first_order(sgd, params, rosen_loss, 3)
    x, v, expected = X0_ROSEN.copy(), np.zeros(2), []
    for _ in range(3):  # Keras heavy ball: v ← μv − lr·g, x ← x + v
        v = mu * v - lr * rosen_grad(x)
        x = x + v
        expected.append(x)
    assert_trajectory(actual, expected)


# ---------------------------------------------------------------------------------------------
# Yogi and LARS


def paper_yogi_reference(x, grad_fn, steps, lr, b1, b2, eps):
    m, v, out = np.zeros_like(x), np.zeros_like(x), []
    for _ in range(steps):
        g = grad_fn(x)
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * np.sign(v - g * g) * g * g
        x = x - lr * m / (np.sqrt(v) + eps)
        out.append(x)
    return out


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_paper_yogi_matches_formula(problem):
    x0, shapes, loss_fn, grad_fn = PROBLEMS[problem]
    params = make_params(x0, shapes)
    actual = run_first_order(PaperYogi(params, lr=0.05, betas=(0.8, 0.9)), params, loss_fn, 3)
    assert_trajectory(actual, paper_yogi_reference(x0, grad_fn, 3, 0.05, 0.8, 0.9, 1e-3))


def test_pytorch_optimizer_yogi_is_not_the_paper_variant():
    # Why PaperYogi exists: with moments starting at 0 the library still bias-corrects v.
    params = make_params(X0_QUAD, SHAPES_QUAD)
    ours = run_first_order(PaperYogi(params, lr=0.05), params, quad_loss, 2)
    twins = make_params(X0_QUAD, SHAPES_QUAD)
    library = pytorch_optimizer.Yogi(twins, lr=0.05, initial_accumulator=0.0, eps=1e-3)
    assert not np.allclose(run_first_order(library, twins, quad_loss, 2), ours, rtol=1e-6)


def paper_lars_reference(x, segments, grad_fn, steps, lr, mu, wd, total):
    u, out = np.zeros_like(x), []
    for t in range(steps):
        g = grad_fn(x)
        gamma = lr * (1 - min(1.0, t / total)) ** 2
        x_new = x.copy()
        for seg in segments:
            xn, gn = np.linalg.norm(x[seg]), np.linalg.norm(g[seg])
            denom = gn + wd * xn
            trust = xn / denom if xn > 0 and denom > 0 else 1.0
            u[seg] = mu * u[seg] + gamma * trust * (g[seg] + wd * x[seg])
            x_new[seg] = x[seg] - u[seg]
        x = x_new
        out.append(x)
    return out


def test_paper_lars_matches_formula_per_tensor_with_decay_to_zero():
    x0 = X0_QUAD.copy()
    x0[4] = 0.0  # a zero "bias" tensor: λ = 1 there
    params = make_params(x0, SHAPES_QUAD)
    opt = PaperLARS(params, lr=0.3, momentum=0.5, weight_decay=0.1, total_steps=3)
    actual = run_first_order(opt, params, quad_loss, 5)  # steps 4 and 5: γ = 0, u only decays
    segments = [slice(0, 4), slice(4, 5)]
    assert_trajectory(actual, paper_lars_reference(x0, segments, quad_grad, 5, 0.3, 0.5, 0.1, 3))
    assert actual[0][4] != 0.0


def test_pytorch_optimizer_lars_is_not_the_paper_variant():
    # Why PaperLARS exists: even with trust_coefficient = 1, 1-D tensors get no trust ratio.
    params = make_params(X0_QUAD, SHAPES_QUAD)
    ours = run_first_order(PaperLARS(params, lr=0.3, total_steps=10**9), params, quad_loss, 2)
    twins = make_params(X0_QUAD, SHAPES_QUAD)
    library = pytorch_optimizer.LARS(twins, lr=0.3, weight_decay=5e-4, trust_coefficient=1.0)
    assert not np.allclose(run_first_order(library, twins, quad_loss, 2), ours, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# L-BFGS and O-LBFGS


def lbfgs_reference(x, grad_fn, steps, lr, tau, eps, memory, scaling):
    """The authors' loop written from lodo.md §2: a circular buffer indexed by t mod memory."""
    buffer, out = [None] * memory, []
    for t in range(steps):
        g = grad_fn(x)
        p, alphas, k = -g, [], min(t, memory)
        for i in range(1, k + 1):
            s_i, y_i = buffer[(t - i) % memory]
            alphas.append(s_i @ p / (s_i @ y_i))
            p = p - alphas[-1] * y_i
        if t > 0:
            y_new = buffer[(t - 1) % memory][1]
            if scaling == "average":
                coefficient = np.mean(
                    [s @ y / (y @ y) for s, y in (buffer[(t - i) % memory] for i in range(1, k + 1))]
                )
            else:
                s_scale = buffer[(t - k) % memory][0] if scaling == "oldest" else buffer[(t - 1) % memory][0]
                coefficient = s_scale @ y_new / (y_new @ y_new)
            p = coefficient * p
        else:
            p = eps * p
        for i in reversed(range(1, k + 1)):
            s_i, y_i = buffer[(t - i) % memory]
            beta = y_i @ p / (y_i @ s_i)
            p = p + (alphas[i - 1] - beta) * s_i
        s = lr * tau / (tau + t) * p
        x_new = x + s
        buffer[t % memory] = (s, grad_fn(x_new) - g)
        x = x_new
        out.append(x)
    return out, buffer


def run_lbfgs(opt, params, loss_fn, steps):
    trajectory = []
    for _ in range(steps):
        backward(params, loss_fn)
        opt.step(lambda: backward(params, loss_fn))
        trajectory.append(flat(params))
    return np.array(trajectory)


LBFGS_VARIANTS = {
    "oldest": lambda params, **kw: SchraudolphLBFGS(params, scale_from="oldest", **kw),
    "newest": lambda params, **kw: SchraudolphLBFGS(params, scale_from="newest", **kw),
    "average": lambda params, **kw: OnlineLBFGS(params, **kw),
}


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("scaling", ["oldest", "newest", "average"])
def test_lbfgs_matches_reference_loop(problem, scaling):
    x0, shapes, loss_fn, grad_fn = PROBLEMS[problem]
    kw = {"lr": 0.5, "tau": 4.0, "eps": 0.05, "history_size": 3}
    params = make_params(x0, shapes)
    actual = run_lbfgs(LBFGS_VARIANTS[scaling](params, **kw), params, loss_fn, 5)
    expected, _ = lbfgs_reference(x0, grad_fn, 5, 0.5, 4.0, 0.05, 3, scaling)
    assert_trajectory(actual, expected, rtol=1e-10, atol=1e-12)


def test_lbfgs_oldest_and_newest_scaling_differ_once_two_pairs_are_stored():
    kw = {"lr": 0.5, "tau": 4.0, "eps": 0.05}
    runs = {}
    for scaling in ("oldest", "newest"):
        params = make_params(X0_QUAD, SHAPES_QUAD)
        runs[scaling] = run_lbfgs(LBFGS_VARIANTS[scaling](params, **kw), params, quad_loss, 3)
    np.testing.assert_array_equal(runs["oldest"][:2], runs["newest"][:2])  # ≤ 1 pair: same s
    assert not np.allclose(runs["oldest"][2], runs["newest"][2], rtol=1e-8)


def dense_lbfgs_inverse_hessian(s_history, y_history, scale):
    """H from scale·I by the dense BFGS recursion H ← VᵀHV + ρ s sᵀ, V = I − ρ y sᵀ, oldest first."""
    n = len(s_history[0])
    h = scale * np.eye(n)
    for s, y in zip(s_history, y_history, strict=True):
        rho = 1.0 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def test_two_loop_recursion_equals_dense_inverse_hessian():
    rng = np.random.default_rng(7)
    s_history = [rng.standard_normal(5) for _ in range(3)]
    y_history = [A @ s + 0.1 * rng.standard_normal(5) for s in s_history]
    assert all(s @ y > 0 for s, y in zip(s_history, y_history, strict=True))
    g = rng.standard_normal(5)
    direction = lbfgs_direction(
        torch.tensor(g), [torch.tensor(s) for s in s_history], [torch.tensor(y) for y in y_history], 0.37
    )
    expected = -dense_lbfgs_inverse_hessian(s_history, y_history, 0.37) @ g
    np.testing.assert_allclose(direction.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_two_loop_recursion_is_exact_on_a_quadratic_with_n_pairs():
    # n mutually A-conjugate steps on one quadratic (as exact line searches would give): the
    # secant conditions H·yᵢ = sᵢ are inherited by every later update, so H = A⁻¹ exactly.
    rng = np.random.default_rng(8)
    s_history = []
    for _ in range(5):
        s = rng.standard_normal(5)
        for prev in s_history:  # Gram–Schmidt in the A inner product
            s = s - (prev @ A @ s) / (prev @ A @ prev) * prev
        s_history.append(s)
    y_history = [A @ s for s in s_history]
    g = rng.standard_normal(5)
    direction = lbfgs_direction(
        torch.tensor(g), [torch.tensor(s) for s in s_history], [torch.tensor(y) for y in y_history], 3.0
    )
    np.testing.assert_allclose(direction.numpy(), -np.linalg.solve(A, g), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cls", [SchraudolphLBFGS, OnlineLBFGS])
def test_lbfgs_closure_once_per_step_on_the_same_batch(cls):
    rng = np.random.default_rng(3)
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = cls(params, lr=0.5, eps=0.1)
    a = torch.tensor(A)
    calls = []

    def loss_on(center, tag):
        calls.append(tag)
        x = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * (x - center) @ a @ (x - center)

    for k in range(4):
        center = torch.tensor(rng.standard_normal(5))  # a fresh batch for the caller's evaluation
        for p in params:
            p.grad = None
        loss_on(center, ("fresh", k)).backward()

        def closure(center=center, k=k):
            loss = loss_on(center, ("same", k))  # no zero_grad: the optimizer cleared .grad
            loss.backward()
            return loss

        opt.step(closure)
        state = opt.state[params[0]]
        # Same batch ⇒ y = g' − g = A·s exactly (the center cancels).
        np.testing.assert_allclose(
            state["y_history"][-1].numpy(), A @ state["s_history"][-1].numpy(), rtol=1e-10
        )
    assert calls == [(tag, k) for k in range(4) for tag in ("fresh", "same")]
    assert opt.state[params[0]]["step"] == 4


def test_lbfgs_history_is_capped_at_history_size():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = SchraudolphLBFGS(params, lr=0.5, tau=4.0, eps=0.05, history_size=2)
    run_lbfgs(opt, params, quad_loss, 5)
    _, buffer = lbfgs_reference(X0_QUAD, quad_grad, 5, 0.5, 4.0, 0.05, 2, "oldest")
    state = opt.state[params[0]]
    assert len(state["s_history"]) == len(state["y_history"]) == 2
    newest_last = [buffer[1], buffer[0]]  # slots t mod 2 for t = 3, 4
    for ours_s, ours_y, (s, y) in zip(state["s_history"], state["y_history"], newest_last, strict=True):
        np.testing.assert_allclose(ours_s.numpy(), s, rtol=1e-10)
        np.testing.assert_allclose(ours_y.numpy(), y, rtol=1e-10)


def test_lbfgs_skips_pairs_with_zero_curvature_without_nan():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    c = torch.tensor(B)

    def linear(ps):
        return c @ torch.cat([p.reshape(-1) for p in ps])

    opt = OnlineLBFGS(params, lr=2.0, tau=1.0, eps=0.1)
    actual = run_lbfgs(opt, params, linear, 3)  # y = 0 every time: no pair, p = −ε·g each step
    assert opt.state[params[0]]["s_history"] == []
    x, expected = X0_QUAD.copy(), []
    for t in range(3):
        x = x - 2.0 * 1.0 / (1.0 + t) * 0.1 * B
        expected.append(x)
    assert_trajectory(actual, expected)


# ---------------------------------------------------------------------------------------------
# BFGS, Levenberg–Marquardt, Newton


def bfgs_reference(x, grad_fn, steps, lr, h0):
    """The authors' loop (lodo.md §2); returns x after each iteration and H before each p."""
    h, g, xs, hs = h0 * np.eye(len(x)), grad_fn(x), [], []
    for _ in range(steps):
        hs.append(h.copy())
        s = -lr * h @ g
        x = x + s
        g_new = grad_fn(x)
        y = g_new - g
        sy = s @ y
        h = h + (sy + y @ h @ y) / sy**2 * np.outer(s, s) - (np.outer(h @ y, s) + np.outer(s, y @ h)) / sy
        g = g_new
        xs.append(x)
    return xs, hs


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_bfgs_matches_reference_loop_and_dense_h(problem):
    x0, shapes, loss_fn, grad_fn = PROBLEMS[problem]
    params = make_params(x0, shapes)
    opt = BFGS(params, lr=0.1, h0_scale=0.5)
    actual = run_first_order(opt, params, loss_fn, 3)
    expected, hs = bfgs_reference(x0, grad_fn, 3, 0.1, 0.5)
    assert_trajectory(actual, expected, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(opt.state[params[0]]["hessian_inv"].numpy(), hs[2], rtol=1e-10, atol=1e-12)


def test_bfgs_update_equals_dense_formula():
    rng = np.random.default_rng(5)
    m = rng.standard_normal((4, 4))
    h, s, y = m @ m.T, rng.standard_normal(4), rng.standard_normal(4)
    sy = s @ y
    expected = h + (sy + y @ h @ y) / sy**2 * np.outer(s, s) - (h @ np.outer(y, s) + np.outer(s, y) @ h) / sy
    actual = bfgs_update_(torch.tensor(h), torch.tensor(s), torch.tensor(y))
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_bfgs_skips_the_update_when_sy_is_zero():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    c = torch.tensor(B)
    opt = BFGS(params, lr=0.1)
    run_first_order(opt, params, lambda ps: c @ torch.cat([p.reshape(-1) for p in ps]), 3)
    np.testing.assert_array_equal(opt.state[params[0]]["hessian_inv"].numpy(), np.eye(5))
    np.testing.assert_allclose(flat(params), X0_QUAD - 0.3 * B, rtol=1e-12)


def run_graph_closure(opt, params, loss_fn, steps):
    trajectory = []
    for _ in range(steps):
        opt.step(lambda: loss_fn(params))
        trajectory.append(flat(params))
    return np.array(trajectory)


def test_newton_reaches_the_quadratic_minimum_in_one_step():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = Newton(params)
    loss = opt.step(lambda: quad_loss(params))
    np.testing.assert_allclose(flat(params), np.linalg.solve(A, B), rtol=1e-10)
    assert not loss.requires_grad
    grads = torch.cat([p.grad.reshape(-1) for p in params]).numpy()
    np.testing.assert_allclose(grads, quad_grad(X0_QUAD), rtol=1e-12)  # .grad = g before the step


def test_newton_matches_formula_on_rosenbrock():
    params = make_params(X0_ROSEN, SHAPES_ROSEN)
    actual = run_graph_closure(Newton(params), params, rosen_loss, 2)
    x, expected = X0_ROSEN.copy(), []
    for _ in range(2):
        x = x - np.linalg.solve(rosen_hess(x), rosen_grad(x))
        expected.append(x)
    assert_trajectory(actual, expected, rtol=1e-10, atol=1e-12)


def test_newton_singular_hessian_takes_the_minimum_norm_step():
    params = make_params([1.0, 2.0], SHAPES_ROSEN)
    Newton(params).step(lambda: (params[0][0] + params[1][0]) ** 2)  # H = [[2, 2], [2, 2]]
    np.testing.assert_allclose(flat(params), [-0.5, 0.5], rtol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.3, 5.0])
def test_levenberg_marquardt_matches_dense_formula(lam):
    params = make_params(X0_ROSEN, SHAPES_ROSEN)
    actual = run_graph_closure(LevenbergMarquardt(params, lam=lam), params, rosen_loss, 2)
    x, expected = X0_ROSEN.copy(), []
    for _ in range(2):
        h, g = rosen_hess(x), rosen_grad(x)
        h2 = h @ h
        x = x - np.linalg.solve(h2 + lam * np.diag(np.diag(h2)), h @ g)
        expected.append(x)
    assert_trajectory(actual, expected, rtol=1e-10, atol=1e-12)


def test_levenberg_marquardt_without_damping_is_newton_on_a_quadratic():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    LevenbergMarquardt(params, lam=0.0).step(lambda: quad_loss(params))
    np.testing.assert_allclose(flat(params), np.linalg.solve(A, B), rtol=1e-9)


@pytest.mark.parametrize("cls", [BFGS, LevenbergMarquardt, Newton])
def test_dense_methods_refuse_above_max_dim(cls):
    with pytest.raises(ValueError, match=r"max_dim = 4.*n = 5|n = 5.*max_dim = 4"):
        cls(make_params(X0_QUAD, SHAPES_QUAD), max_dim=4)
    cls(make_params(X0_QUAD, SHAPES_QUAD), max_dim=5)


# ---------------------------------------------------------------------------------------------
# Shared contracts: state_dict round trip, dtypes, non-finite gradients, bad input, docs

# The registry's records whose class lives in lodo.baselines. Excluded: the LODO family, AdamQLR
# and series SFN, whose classes meet these contracts in test_lodo.py, test_adamqlr.py and
# test_sfn_series.py, and "momentum" / "sgd", which are torch's own SGD.
BASELINES = [name for name, spec in lodo.OPTIMIZERS.items() if spec.target.startswith("lodo.baselines.")]

# Values and constructor options that make three steps on the test problems move far enough to
# compare (a large ε so that L-BFGS's first step is not ~0, a memory of 2 so that it wraps); a
# record not listed runs at its registry defaults.
SETTINGS = {
    "adam": ({"lr": 0.05}, {}),
    "rmsprop": ({"lr": 0.02, "momentum": 0.5}, {}),
    "yogi": ({"lr": 0.05}, {}),
    "lars": ({"lr": 0.1}, {}),
    "lbfgs": ({"lr": 0.5, "eps": 0.05}, {"history_size": 2}),
    "olbfgs": ({"lr": 0.5, "eps": 0.05}, {"history_size": 2}),
    "bfgs": ({"lr": 0.1}, {}),
    "levenberg-marquardt": ({"lam": 0.5}, {}),
}


def factory(name):
    spec = lodo.get(name)
    values, options = SETTINGS.get(name, ({}, {}))
    if spec.needs_total_steps:  # LARS's decay horizon: the tests run at most 8 steps
        options = {"total_steps": 8, **options}
    return lambda ps: spec.build(ps, values, **options)


# name → (factory, how its step is driven, by the record's evaluation mode): "gradient" = .grad
# then step(); "gradient-pair" = .grad then step(closure with backward); "loss" = step(closure
# returning the loss with its graph).
SPECS = {name: (factory(name), lodo.get(name).evaluation) for name in BASELINES}


def drive(kind, opt, params, loss_fn, steps):
    runner = {"gradient": run_first_order, "gradient-pair": run_lbfgs, "loss": run_graph_closure}[kind]
    return runner(opt, params, loss_fn, steps)


def test_the_registry_names_every_baseline_class():
    # BASELINES enumerates the registry: a class exported here but never registered would escape
    assert sorted(lodo.get(name).resolve().__name__ for name in BASELINES) == sorted(baselines.__all__)


def state_tensors(opt):
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, list):
                yield from value


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_round_trip_resumes_exactly(name, dtype):
    factory, kind = SPECS[name]
    params = make_params(X0_QUAD, SHAPES_QUAD, dtype)
    opt = factory(params)
    drive(kind, opt, params, quad_loss, 2)
    saved = copy.deepcopy(opt.state_dict())
    resumed_params = [p.detach().clone().requires_grad_(True) for p in params]
    resumed = factory(resumed_params)
    resumed.load_state_dict(saved)
    expected = drive(kind, opt, params, quad_loss, 3)
    actual = drive(kind, resumed, resumed_params, quad_loss, 3)
    np.testing.assert_array_equal(actual, expected)
    assert all(p.dtype == dtype for p in resumed_params)
    assert all(t.dtype == dtype for t in state_tensors(resumed) if t.is_floating_point() and t.dim() > 0)


@pytest.mark.parametrize("name", list(SPECS))
def test_float32_follows_float64(name):
    factory, kind = SPECS[name]
    results = {}
    for dtype in (torch.float32, torch.float64):
        params = make_params(X0_ROSEN, SHAPES_ROSEN, dtype)
        results[dtype] = drive(kind, factory(params), params, rosen_loss, 3)
        assert all(p.dtype == dtype for p in params)
    np.testing.assert_allclose(results[torch.float32], results[torch.float64], rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SPECS))
def test_non_finite_gradient_reaches_the_parameters_without_raising(name):
    factory, kind = SPECS[name]
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = factory(params)
    nan = torch.tensor(float("nan"), dtype=torch.float64)

    def poisoned(ps):  # finite at x, but its gradient (and Hessian) has a NaN component
        return quad_loss(ps) + nan * ps[1][0] ** 2

    def nan_grad_step():
        backward(params, quad_loss)
        params[1].grad[0] = float("nan")

    for _ in range(2):
        if kind == "loss":
            opt.step(lambda: poisoned(params))
        else:
            nan_grad_step()
            if kind == "gradient-pair":
                opt.step(lambda: backward(params, quad_loss))
            else:
                opt.step()
    assert not all(bool(torch.isfinite(p).all()) for p in params)
    if name in ("lbfgs", "olbfgs", "bfgs"):  # the curvature state stays finite
        assert all(
            bool(torch.isfinite(t).all())
            for t in state_tensors(opt)
            if t.dim() == 2 or kind == "gradient-pair"
        )


BAD_INPUTS = [
    (KerasAdam, {"lr": -1.0}, "lr"),
    (KerasAdam, {"lr": float("nan")}, "lr"),
    (KerasAdam, {"lr": float("inf")}, "lr"),
    (KerasAdam, {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    (KerasAdam, {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    (KerasAdam, {"betas": (0.9,)}, "betas"),
    (KerasAdam, {"eps": -1e-7}, "eps"),
    (KerasRMSprop, {"lr": -0.1}, "lr"),
    (KerasRMSprop, {"rho": -0.1}, "rho"),
    (KerasRMSprop, {"rho": float("inf")}, "rho"),
    (KerasRMSprop, {"momentum": 1.0}, "momentum"),
    (KerasRMSprop, {"eps": float("nan")}, "eps"),
    (PaperYogi, {"lr": float("nan")}, "lr"),
    (PaperYogi, {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    (PaperYogi, {"eps": -1.0}, "eps"),
    (PaperLARS, {"lr": -1.0, "total_steps": 10}, "lr"),
    (PaperLARS, {"momentum": 1.5, "total_steps": 10}, "momentum"),
    (PaperLARS, {"weight_decay": -1.0, "total_steps": 10}, "weight_decay"),
    (PaperLARS, {"total_steps": 0}, "total_steps"),
    (PaperLARS, {"total_steps": 2.5}, "total_steps"),
    (SchraudolphLBFGS, {"lr": -1.0}, "lr"),
    (SchraudolphLBFGS, {"tau": 0.0}, "tau"),
    (SchraudolphLBFGS, {"eps": 0.0}, "eps"),
    (SchraudolphLBFGS, {"history_size": 0}, "history_size"),
    (SchraudolphLBFGS, {"scale_from": "middle"}, "scale_from"),
    (OnlineLBFGS, {"lr": float("inf")}, "lr"),
    (OnlineLBFGS, {"history_size": 1.5}, "history_size"),
    (BFGS, {"lr": -0.01}, "lr"),
    (BFGS, {"h0_scale": 0.0}, "h0_scale"),
    (BFGS, {"max_dim": 0}, "max_dim"),
    (LevenbergMarquardt, {"lam": -1.0}, "lam"),
    (LevenbergMarquardt, {"max_dim": 0}, "max_dim"),
    (Newton, {"max_dim": -3}, "max_dim"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name"), BAD_INPUTS)
def test_bad_arguments_raise_value_error_naming_them(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"^Invalid {name}: .*\(allowed: "):
        cls(make_params(X0_QUAD, SHAPES_QUAD), **kwargs)


@pytest.mark.parametrize("name", BASELINES)
def test_empty_params_raise_value_error_naming_params(name):
    spec = lodo.get(name)
    required = {"total_steps": 10} if spec.needs_total_steps else {}
    with pytest.raises(ValueError, match=r"^Invalid params: "):
        spec.resolve()([], **required)
    with pytest.raises(ValueError, match=r"^Invalid params: "):
        spec.resolve()(iter([{"params": []}]), **required)


# the records whose step needs a closure: every evaluation mode but plain "gradient"
@pytest.mark.parametrize("name", [name for name in BASELINES if lodo.get(name).evaluation != "gradient"])
def test_missing_closure_raises_value_error_naming_closure(name):
    params = make_params(X0_QUAD, SHAPES_QUAD)
    opt = lodo.get(name).resolve()(params)
    backward(params, quad_loss)
    before = flat(params)
    with pytest.raises(ValueError, match=r"^Invalid closure: None"):
        opt.step()
    np.testing.assert_array_equal(flat(params), before)


def test_closure_contract_violations_are_named():
    params = make_params(X0_QUAD, SHAPES_QUAD)
    with pytest.raises(ValueError, match=r"^Invalid closure: .*with its graph"):
        Newton(params).step(lambda: 1.0)
    opt = OnlineLBFGS(params)
    backward(params, quad_loss)
    with pytest.raises(ValueError, match=r"^Invalid closure: .*backward"):
        opt.step(lambda: quad_loss(params).detach())


@pytest.mark.parametrize("cls", [SchraudolphLBFGS, OnlineLBFGS, BFGS, LevenbergMarquardt, Newton])
def test_flat_methods_take_one_group_of_one_dtype(cls):
    a, b = make_params(X0_QUAD, SHAPES_QUAD)
    with pytest.raises(ValueError, match=r"^Invalid params: 2 parameter groups"):
        cls([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match=r"^Invalid params: dtypes"):
        cls([a, b.detach().float().requires_grad_(True)])


@pytest.mark.parametrize("name", BASELINES)
def test_docstring_names_every_hyperparameter(name):
    cls = lodo.get(name).resolve()
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
    doc = inspect.getdoc(cls)
    assert all(f"{n}:" in doc for n in names), [n for n in names if f"{n}:" not in doc]
    assert "Reference" in doc and "Non-finite" in doc


def test_hessian_falls_back_to_a_loop_without_vmap(monkeypatch):
    grad = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    params = make_params(X0_ROSEN, SHAPES_ROSEN)
    LevenbergMarquardt(params, lam=0.3).step(lambda: rosen_loss(params))
    h, g = rosen_hess(X0_ROSEN), rosen_grad(X0_ROSEN)
    expected = X0_ROSEN - np.linalg.solve(h @ h + 0.3 * np.diag(np.diag(h @ h)), h @ g)
    np.testing.assert_allclose(flat(params), expected, rtol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SPECS))
def test_cuda_matches_cpu(name):
    factory, kind = SPECS[name]
    results = {}
    for device in ("cpu", "cuda"):
        params = [p.detach().to(device).requires_grad_(True) for p in make_params(X0_QUAD, SHAPES_QUAD)]
        results[device] = drive(kind, factory(params), params, quad_loss_on(device), 3)
    np.testing.assert_allclose(results["cuda"], results["cpu"], rtol=1e-9, atol=1e-12)


def quad_loss_on(device):
    a, b = torch.tensor(A, device=device), torch.tensor(B, device=device)

    def loss(params):
        x = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * x @ a @ x - b @ x

    return loss
