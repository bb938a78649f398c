"""The noisy quadratic bowl against independent computations (lodo.md §4.1, §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tasks


def bowl(seed: int = 0, **options):
    return tasks.build("noisy-quadratic-bowl", seed=seed, **options)


def test_half_trace_is_the_paper_number():
    eigenvalues = np.geomspace(1e-3, 1.0, 100)
    assert 0.5 * eigenvalues.sum() == pytest.approx(7.411847253913, abs=1e-11)
    assert bowl().optimal_loss == pytest.approx(7.411847253913, abs=1e-11)
    assert bowl(sigma=0.5).optimal_loss == pytest.approx(7.411847253913 / 4, abs=1e-11)


def test_hessian_is_a_rotation_of_the_geometric_spectrum():
    task = bowl(seed=5)
    hessian = task.hessian.numpy()
    assert np.allclose(hessian, hessian.T, atol=1e-15)
    assert np.allclose(np.linalg.eigvalsh(hessian), np.geomspace(1e-3, 1.0, 100), rtol=1e-10, atol=1e-14)
    assert torch.equal(bowl(seed=5).hessian, task.hessian)
    assert not torch.allclose(bowl(seed=6).hessian, task.hessian)


def test_newton_tracking_loss_matches_half_trace_monte_carlo():
    """Jump to the current minimum before every fresh evaluation: the loss is then ½ξᵀHξ."""
    task = bowl(seed=1)
    losses = []
    for _ in range(8000):
        with torch.no_grad():
            task.model.x.copy_(task.centre)
        losses.append(task.train_loss().item())
    losses = np.array(losses)
    standard_error = losses.std() / math.sqrt(len(losses))
    assert abs(losses.mean() - 7.411847253913) < 4 * standard_error
    assert standard_error < 0.05


def test_loss_is_the_quadratic_form_at_the_moved_centre():
    task = bowl(seed=2)
    with torch.no_grad():
        task.model.x.normal_(generator=torch.Generator().manual_seed(0))
    before = task.centre.clone()
    loss = task.train_loss().item()
    offset = (task.model.x - task.centre).detach().numpy()
    assert loss == pytest.approx(0.5 * offset @ task.hessian.numpy() @ offset, rel=1e-12)
    step = (task.centre - before).numpy()
    assert np.linalg.norm(step) > 0


def test_same_batch_and_metrics_do_not_move_the_centre():
    task = bowl(seed=3)
    first = task.train_loss().item()
    centre = task.centre.clone()
    assert task.same_batch_loss().item() == first
    assert task.same_batch_loss().item() == first
    metrics = task.metrics(preconditioner=lambda v: -v)
    assert torch.equal(task.centre, centre)
    assert metrics["loss"] == pytest.approx(first, rel=1e-15)
    assert metrics["optimal_loss"] == task.optimal_loss


def test_hessian_vector_products_match_double_backprop():
    task = bowl(seed=4)
    task.train_loss()
    vectors = torch.randn(5, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (gradient,) = torch.autograd.grad(task.same_batch_loss(), task.model.x, create_graph=True)
    double_backprop = torch.stack(
        [torch.autograd.grad(gradient, task.model.x, grad_outputs=v, retain_graph=True)[0] for v in vectors]
    )
    assert torch.allclose(task.hessian_vector_products(vectors), double_backprop, rtol=1e-12, atol=1e-14)


def frobenius_error(residual_map: np.ndarray) -> float:
    return np.linalg.norm(residual_map, "fro") / math.sqrt(len(residual_map))


def test_hessian_error_exact_cases():
    task = bowl(seed=7)
    hessian = task.hessian
    inverse = torch.linalg.inv(hessian)
    identity = np.eye(100)
    assert task.metrics(preconditioner=lambda v: -v @ inverse)["hessian_error"] == pytest.approx(
        0.0, abs=1e-9
    )
    # G = −(1 − s)H⁻¹ gives I + GH = sI: every unit vector has residual norm s.
    assert task.metrics(preconditioner=lambda v: -0.7 * v @ inverse)["hessian_error"] == pytest.approx(
        0.3, abs=1e-9
    )
    assert task.metrics(preconditioner=lambda v: torch.zeros_like(v))["hessian_error"] == pytest.approx(
        1.0, abs=1e-12
    )
    assert frobenius_error(identity - 0.7 * identity) == pytest.approx(0.3)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.9])
def test_hessian_error_is_the_normalized_frobenius_norm(alpha):
    """For G = −αI the metric estimates ‖I − αH‖_F/√n from 100 random unit vectors."""
    task = bowl(seed=8)
    expected = frobenius_error(np.eye(100) - alpha * task.hessian.numpy())
    estimate = task.metrics(preconditioner=lambda v: -alpha * v)["hessian_error"]
    assert estimate == pytest.approx(expected, rel=0.03)


def test_hessian_error_metric_does_not_disturb_training():
    plain, probed = bowl(seed=9), bowl(seed=9)
    first = [plain.train_loss().item() for _ in range(5)]
    second = []
    for _ in range(5):
        probed.metrics(preconditioner=lambda v: -v)
        second.append(probed.train_loss().item())
    assert first == second


def test_float32_bowl():
    task = bowl(dtype=torch.float32)
    assert task.hessian.dtype == task.centre.dtype == task.train_loss().dtype == torch.float32
    assert math.isfinite(task.metrics(preconditioner=lambda v: -v)["hessian_error"])
