"""The OutputTask protocol: tasks whose loss is a loss form of a model's outputs hand over batches."""

from __future__ import annotations

import pytest
import torch

import tasks
from tasks.base import OutputBatch, OutputTask

OUTPUT_TASKS = {"digits-mlp": {}, "digits-autoregression": {"batch_size": 16, "metric_images": 4}}


def test_which_tasks_have_model_outputs():
    assert isinstance(tasks.build("digits-mlp", seed=0), OutputTask)
    assert isinstance(tasks.build("digits-autoregression", seed=0, batch_size=4), OutputTask)
    assert not isinstance(tasks.build("rosenbrock", seed=0), OutputTask)
    assert not isinstance(tasks.build("noisy-quadratic-bowl", seed=0), OutputTask)


@pytest.mark.parametrize("name", OUTPUT_TASKS)
def test_next_output_batch_is_the_batch_train_loss_would_draw(name):
    drawn = tasks.build(name, seed=3, **OUTPUT_TASKS[name])
    evaluated = tasks.build(name, seed=3, **OUTPUT_TASKS[name])
    with torch.no_grad():
        for _ in range(3):
            batch = drawn.next_output_batch()
            assert isinstance(batch, OutputBatch) and batch.model is drawn.model
            assert float(batch.evaluate()) == pytest.approx(float(evaluated.train_loss()), rel=1e-6)
            assert float(batch.evaluate()) == float(batch.evaluate())


def test_supervised_same_batch_loss_sees_the_drawn_batch():
    task = tasks.build("digits-mlp", seed=0)
    batch = task.next_output_batch()
    assert batch.loss == "cross-entropy" and batch.targets.dtype == torch.long
    loss = batch.evaluate()
    assert float(task.same_batch_loss().detach()) == float(loss.detach())
    assert loss.requires_grad and loss.shape == ()
