"""The one-pass strategy: its hypergradient on small exactly solvable problems, and runs on digits-mlp."""

from __future__ import annotations

import math

import pytest
import torch

import lodo
from tuner import events as ev
from tuner.rundir import RunDir
from tuner.runtime import JobContext
from tuner.strategies.onepass import (
    OnePassConfig,
    RawHyperparameters,
    implicit_hypergradient,
    run_episode,
    sgd_update,
    tune_onepass,
)

COMMON_KEYS = {"strategy", "task", "optimizer", "hyperparameters", "transforms", "settings", "job_seed"}
COMMON_KEYS |= {"task_options", "versions"}


def regression(seed: int, n: int = 24, d: int = 3):
    """Linear least squares: ½·mean((Xw + c − y)²) on a train and a validation split (float64)."""
    g = torch.Generator().manual_seed(seed)
    x_train, x_val = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g).double(),
    )
    w_true = torch.randn(d, generator=g, dtype=torch.float64)
    y_train = x_train @ w_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    y_val = x_val @ w_true + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)

    def loss(x, y):
        return lambda ws: 0.5 * ((x @ ws[0] + ws[1] - y) ** 2).mean()

    return loss(x_train, y_train), loss(x_val, y_val), x_train, y_train


def raw(lr: float, weight_decay: float, momentum: float, shapes=None) -> RawHyperparameters:
    values = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
    return RawHyperparameters(values, shapes, torch.float64, "cpu")


def start(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(3, generator=g, dtype=torch.float64), torch.randn((), generator=g).double()]
    buffers = [0.5 * torch.randn(3, generator=g, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)]
    return weights, buffers


def central_difference(f, x: float, h: float = 1e-5) -> float:
    return (f(x + h) - f(x - h)) / (2 * h)


def test_lookback_one_is_the_exact_one_step_derivative_in_each_hyperparameter():
    train, validation, *_ = regression(0)
    weights, buffers = start()
    hp = raw(0.1, 1e-2, 0.5)
    step = implicit_hypergradient(train, validation, weights, buffers, hp, lookback=1)

    w = [t.clone().requires_grad_() for t in weights]
    grads = torch.autograd.grad(train(w), w)

    def validation_after_step(x: float, y: float, z: float) -> float:
        lr, wd, mu = 10**x, 10**y, 1 / (1 + math.exp(-z))
        new = [wi - lr * (mu * b + g + wd * wi) for wi, g, b in zip(weights, grads, buffers, strict=True)]
        return float(validation(new))

    x, y, z = (float(t.detach()) for t in hp.tensors())
    expected = [
        central_difference(lambda v: validation_after_step(v, y, z), x),
        central_difference(lambda v: validation_after_step(x, v, z), y),
        central_difference(lambda v: validation_after_step(x, y, v), z),
    ]
    assert [float(g) for g in step.hypergradient] == pytest.approx(expected, rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("per_parameter", [False, True])
def test_lookback_five_is_the_truncated_neumann_series_it_defines(per_parameter):
    train, validation, *_ = regression(2)
    weights, buffers = start(3)
    shapes = [t.shape for t in weights] if per_parameter else None
    hp = raw(0.05, 1e-3, 0.7, shapes)
    step = implicit_hypergradient(train, validation, weights, buffers, hp, lookback=5)

    # the same quantity from dense matrices: −v₀ᵀ Σ_{j<5} (I − ∂u/∂w)ʲ ∂u/∂λ
    w = [t.clone().requires_grad_() for t in weights]
    grads = torch.autograd.grad(train(w), w, create_graph=True)
    u, _ = sgd_update(w, grads, buffers, hp)
    u_flat = torch.cat([ui.reshape(-1) for ui in u])
    rows = [torch.autograd.grad(ui, w + hp.tensors(), retain_graph=True, allow_unused=True) for ui in u_flat]

    def dense(parts, tensors):
        return torch.cat(
            [
                (p if p is not None else torch.zeros_like(t)).reshape(-1)
                for p, t in zip(parts, tensors, strict=True)
            ]
        )

    du_dw = torch.stack([dense(r[: len(w)], w) for r in rows])
    du_dlam = torch.stack([dense(r[len(w) :], hp.tensors()) for r in rows])
    w_next = [t.detach().requires_grad_() for t in step.weights]
    v0 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(validation(w_next), w_next)])
    eye = torch.eye(len(v0), dtype=torch.float64)
    series = sum(torch.linalg.matrix_power(eye - du_dw, j) for j in range(5))
    expected = -(v0 @ series @ du_dlam)
    got = torch.cat([g.reshape(-1) for g in step.hypergradient])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_long_lookback_matches_the_exact_derivative_at_the_fixed_point():
    """Trained to convergence, the Neumann estimate with a long look-back is the implicit-function
    derivative: it matches differentiating through the whole unrolled run, and (for the weight
    decay, the only hyperparameter that moves the fixed point) finite differences of the validation
    loss at the closed-form optimum."""
    train, validation, x_train, y_train = regression(4)
    lr, momentum, steps = 0.3, 0.2, 600

    def unrolled(log_weight_decay: torch.Tensor):
        hp = RawHyperparameters(
            {"lr": lr, "weight_decay": 1.0, "momentum": momentum}, None, torch.float64, "cpu"
        )
        hp.log_weight_decay = log_weight_decay
        weights = [torch.zeros(3, dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
        buffers = [torch.zeros_like(t) for t in weights]
        for _ in range(steps):
            w = [t if t.requires_grad else t.requires_grad_() for t in weights]
            grads = torch.autograd.grad(train(w), w, create_graph=True)
            u, buffers = sgd_update(w, grads, buffers, hp)
            weights = [wi - ui for wi, ui in zip(w, u, strict=True)]
        return weights, buffers, hp

    log_wd = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    weights, buffers, hp = unrolled(log_wd)
    (through_the_run,) = torch.autograd.grad(validation(weights), log_wd)

    hp.log_weight_decay = log_wd.detach().requires_grad_()
    detached = ([t.detach() for t in weights], [b.detach() for b in buffers])
    step = implicit_hypergradient(train, validation, *detached, hp, lookback=400)
    d_lr, d_wd, d_momentum = (float(g) for g in step.hypergradient)

    def optimum_loss(y: float) -> float:  # minimiser of train + ½ξ‖w‖² (bias included), closed form
        design = torch.cat([x_train, torch.ones(len(x_train), 1, dtype=torch.float64)], dim=1)
        n = len(design)
        solved = torch.linalg.solve(
            design.T @ design / n + 10**y * torch.eye(4).double(), design.T @ y_train / n
        )
        return float(validation([solved[:3], solved[3]]))

    assert d_wd == pytest.approx(float(through_the_run), rel=1e-6)
    assert d_wd == pytest.approx(central_difference(optimum_loss, -1.0), rel=1e-6)
    assert abs(d_lr) < 1e-9 and abs(d_momentum) < 1e-9  # neither moves the fixed point


def test_tune_onepass_writes_the_common_document_and_improves_validation(tmp_path):
    events = []
    config = OnePassConfig(
        "digits-mlp", steps=60, initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5}, seed=3
    )
    document = tune_onepass(config, JobContext(RunDir(tmp_path), emit=events.append))
    assert set(document) >= COMMON_KEYS
    assert document["strategy"] == "onepass"
    assert set(document["hyperparameters"]) == {"lr", "weight_decay", "momentum"}
    assert all(math.isfinite(v) for v in document["hyperparameters"].values())
    assert document["hyperparameters"] != document["initial"]
    assert [type(e) for e in events] == [ev.PhaseStarted] + [ev.Checkpoint] * 6 and events[-1].of == 6
    assert [e.record for e in events[1:]] == document["trajectory"]
    trajectory = document["trajectory"]
    assert [r["step"] for r in trajectory] == list(range(10, 61, 10))
    assert trajectory[-1]["validation_loss"] < trajectory[0]["validation_loss"]
    assert {"test_loss", "test_accuracy", "validation_loss"} <= set(document["metrics"])
    assert (tmp_path / "hyperparameters.json").exists() and (tmp_path / "config.json").exists()


def test_per_parameter_learning_rates_spread_out():
    config = OnePassConfig(
        "digits-mlp",
        steps=40,
        per_parameter_lr=True,
        initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5},
    )
    episode = run_episode(config)
    spreads = episode.per_parameter_lr
    assert set(spreads) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}
    assert any(s["min"] < s["max"] for s in spreads.values())


def test_only_the_tuned_hyperparameters_move():
    config = OnePassConfig(
        "digits-mlp",
        steps=30,
        tuned=("weight_decay",),
        initial={"lr": 0.02, "weight_decay": 1e-4, "momentum": 0.5},
    )
    final = run_episode(config).final
    assert final["lr"] == pytest.approx(0.02) and final["momentum"] == pytest.approx(0.5)
    assert final["weight_decay"] != pytest.approx(1e-4)


def test_random_starting_values_follow_the_paper_ranges_and_the_seed():
    a, b = OnePassConfig("digits-mlp", seed=1), OnePassConfig("digits-mlp", seed=2)
    assert a.starting_values() == OnePassConfig("digits-mlp", seed=1).starting_values()
    assert a.starting_values() != b.starting_values()
    values = a.starting_values()
    assert 1e-6 <= values["lr"] <= 1e-1 and 1e-7 <= values["weight_decay"] <= 1e-2
    assert 0 < values["momentum"] < 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "nope"}, "Invalid task: 'nope'"),
        ({"steps": 0}, "Invalid steps: 0"),
        ({"update_interval": 0}, "Invalid update_interval: 0"),
        ({"lookback": 0}, "Invalid lookback: 0"),
        ({"meta_lr": 0.0}, "Invalid meta_lr: 0.0"),
        ({"tuned": ("beta",)}, "Invalid tuned: ['beta']"),
        ({"initial": {"momentum": 1.0}}, "Invalid initial momentum: 1.0"),
        ({"initial": {"lr": 2.0}}, "Invalid initial lr: 2.0"),
        ({"initial": {"beta": 0.5}}, "Invalid initial hyperparameter: 'beta'"),
        ({"tuned": 5}, "Invalid tuned: 5 (allowed: a list of"),
        ({"tuned": "lr"}, "Invalid tuned: 'lr' (allowed: a list of"),
        ({"initial": 0.1}, "Invalid initial: 0.1 (allowed: an object with any of lr"),
        ({"initial": {"lr": True}}, "Invalid initial lr: True"),
        ({"task_options": {"batch": 5}}, "batch"),
    ],
)
def test_bad_settings_are_clear_errors(options, message):
    with pytest.raises(ValueError) as info:
        OnePassConfig(**{"task": "digits-mlp", **options})
    assert message in str(info.value)


def test_a_task_without_a_validation_set_is_refused():
    with pytest.raises(ValueError, match="Invalid task for onepass: 'rosenbrock'"):
        run_episode(OnePassConfig("rosenbrock", steps=10))


def test_the_inner_update_is_the_registered_sgd():
    # The document names "sgd" as the optimizer of its values: `lodotune evaluate TASK sgd
    # --hyperparameters` must re-run exactly the update the episode took.
    values = {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.7}
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss_at(w):
        return ((w[0] - target) ** 4).sum() + (w[1] ** 2).sum()

    start = [torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)]
    hp = raw(**values)
    weights, buffers = [w.clone() for w in start], [torch.zeros_like(w) for w in start]
    params = [torch.nn.Parameter(w.clone()) for w in start]
    registered = lodo.get("sgd").build(params, values)
    for _ in range(5):
        w = [t.requires_grad_() for t in weights]
        grads = torch.autograd.grad(loss_at(w), w)
        with torch.no_grad():
            u, buffers = sgd_update(w, grads, buffers, hp)
            weights = [wi - ui for wi, ui in zip(w, u, strict=True)]
        registered.zero_grad()
        loss_at(params).backward()
        registered.step()
    for p, w in zip(params, weights, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)
