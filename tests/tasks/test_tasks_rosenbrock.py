"""The two Rosenbrock functions against hand computations (lodo.md §4.2, §8; clarke.md §3)."""

from __future__ import annotations

import pytest
import torch

import tasks


def at(task, x: float, y: float) -> float:
    with torch.no_grad():
        task.model.x.copy_(torch.tensor([x, y], dtype=torch.float64))
    return task.train_loss().item()


def test_lodo_rosenbrock_values():
    task = tasks.build("rosenbrock", seed=0)
    assert task.dtype == torch.float64
    assert task.model.x.tolist() == [-0.5, 2.0]
    assert task.train_loss().item() == pytest.approx(3.085, abs=1e-12)  # 0.01·2.25 + 1.75²
    assert at(task, 1.0, 1.0) == 0.0
    assert at(task, 0.3, -0.2) == pytest.approx(0.01 * 0.7**2 + (-0.2 - 0.09) ** 2, abs=1e-15)
    assert task.metrics() == {"loss": task.same_batch_loss().item()}


def test_lodo_rosenbrock_gradient():
    task = tasks.build("rosenbrock", seed=0)
    task.train_loss().backward()
    x, y = -0.5, 2.0
    analytic = [-0.02 * (1 - x) - 4 * x * (y - x**2), 2 * (y - x**2)]
    assert task.model.x.grad.tolist() == pytest.approx(analytic, abs=1e-14)


def test_classic_rosenbrock_values():
    task = tasks.build("rosenbrock-classic", seed=0)
    assert task.model.x.tolist() == [1.0, -1.0]
    assert task.train_loss().item() == pytest.approx(0.25 * 100 * 4, abs=1e-12)  # ¼[(1−x)² + 100(y−x²)²]
    assert at(task, 1.0, 1.0) == 0.0
    x, y = -1.2, 1.0
    residuals = torch.tensor([1 - x, 10 * (y - x**2)], dtype=torch.float64)
    assert at(task, x, y) == pytest.approx((0.5 * residuals**2).mean().item(), rel=1e-14)


def test_classic_rosenbrock_random_start_is_standard_normal():
    starts = torch.stack(
        [tasks.build("rosenbrock-classic", seed=s, start="random").model.x for s in range(400)]
    )
    assert starts.mean().abs() < 0.15
    assert 0.85 < starts.std() < 1.15
