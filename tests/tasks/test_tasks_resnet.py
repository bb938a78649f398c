"""ResNet-18 / CIFAR-10 pieces (lodo.md §4.4, §7.13) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tasks
from tasks._batches import EpochBatches
from tasks.resnet18_cifar10 import FrozenBatchNorm, channel_statistics, keras_cross_entropy


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, writers):
    root = tmp_path_factory.mktemp("cifar")
    writers.cifar_like(root, per_batch=3)
    return root


def build(data_dir, **options):
    return tasks.build(
        "resnet18-cifar10", seed=0, data_dir=data_dir, batch_size=4, metric_images=3, **options
    )


def test_frozen_batch_norm_is_keras_inference_with_initial_statistics():
    bn = FrozenBatchNorm(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, 0.2]))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    keras = F.batch_norm(x, torch.zeros(3), torch.ones(3), bn.weight, bn.bias, training=False, eps=1e-3)
    assert torch.allclose(bn(x), keras, atol=1e-6)


def test_keras_cross_entropy_clips_probabilities():
    logits = torch.tensor([[0.0, 1.0, 2.0], [100.0, -100.0, 0.0]])
    targets = torch.tensor([2, 1])
    probabilities = torch.softmax(logits, dim=1).clamp(1e-7, 1 - 1e-7)
    manual = -torch.log(probabilities[[0, 1], targets] / probabilities.sum(dim=1))
    assert keras_cross_entropy(logits, targets).item() == pytest.approx(manual.mean().item(), rel=1e-6)
    assert keras_cross_entropy(logits[1:], targets[1:]).item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_channel_statistics_are_population_mean_and_std():
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_statistics(images)
    scaled = images / 255.0
    assert np.allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert np.allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-12)


def test_epoch_batches_keep_the_last_partial_batch():
    batches = EpochBatches(10, 4, torch.Generator().manual_seed(0))
    epoch = [batches.next() for _ in range(3)]
    assert [len(b) for b in epoch] == [4, 4, 2]
    assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert sorted(torch.cat([batches.next() for _ in range(3)]).tolist()) == list(range(10))


def test_augmentation_is_pad_crop_flip(data_dir):
    task = build(data_dir)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    offsets = torch.tensor([[0, 0], [4, 4], [8, 3]])
    flips = torch.tensor([False, True, True])
    out = task.augment(images, offsets, flips)
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i, ((dy, dx), flip) in enumerate(zip(offsets.tolist(), flips.tolist(), strict=True)):
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        assert np.array_equal(out[i].numpy(), crop[:, :, ::-1] if flip else crop)
    assert torch.equal(out[1], images[1].flip(-1))


def test_training_loss_is_cross_entropy_plus_l2(data_dir):
    task = build(data_dir)
    loss = task.train_loss()
    indices, offsets, flips = task._batch
    inputs = task.augment(task._normalize(task.train_images[indices]), offsets, flips)
    with torch.no_grad():
        cross_entropy = keras_cross_entropy(task.model(inputs), task.train_labels[indices])
        l2 = sum(float(p.double().square().sum()) for p in task.parameters())
    assert loss.item() == pytest.approx(cross_entropy.item() + 0.5e-4 * l2, rel=1e-5)
    assert 0.5e-4 * l2 > 0.1  # the penalty is a visible part of the reported loss at init


def test_standard_batch_norm_statistics(data_dir):
    task = build(data_dir, bn="standard")
    running = task.model.bn1.running_mean
    assert torch.equal(running, torch.zeros(64))
    first = task.train_loss().item()
    after_fresh = running.clone()
    assert not torch.equal(after_fresh, torch.zeros(64))
    assert task.same_batch_loss().item() == first
    assert torch.equal(running, after_fresh)
    task.metrics()
    assert torch.equal(running, after_fresh) and task.model.training


def test_glorot_uniform_kernels(data_dir):
    task = build(data_dir)
    weight = task.model.layers[3][1].conv2.weight  # 512 × 512 × 3 × 3
    limit = math.sqrt(6 / (2 * 512 * 9))
    assert weight.abs().max().item() <= limit
    assert weight.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    assert torch.equal(task.model.linear.bias, torch.zeros(10))


def test_channels_last_gives_the_same_loss(data_dir):
    plain = build(data_dir).train_loss().item()
    assert build(data_dir, channels_last=True).train_loss().item() == pytest.approx(plain, rel=1e-5)
