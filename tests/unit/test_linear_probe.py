"""The linear probe: BatchNorm-without-affine heads, the schedule, determinism, cached and online feeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_challenge.config import ConfigError, from_dict
from ssl_challenge.evaluation.linear_probe import (LinearProbeConfig, build_probe_heads, probe_parameter_groups,
                                                    train_linear_probe_on_features, train_linear_probe_online)
from ssl_challenge.features import normalise_uint8
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.pooling import pooling_plan

torch.set_num_threads(1)


def blobs(num_samples: int, seed: int, num_classes: int = 3, dim: int = 20):
    """``feat4``: linearly separable class blobs (large offset on a shifted scale); ``feat5``: pure noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    centres = np.random.default_rng(123).normal(size=(num_classes, dim)) * 4.0
    separable = 50.0 + 10.0 * (centres[labels] + rng.normal(size=(num_samples, dim)))
    noise = rng.normal(size=(num_samples, 7))
    return {"feat4": separable.astype(np.float32), "feat5": noise.astype(np.float32)}, labels


SMALL = LinearProbeConfig(epochs=4, milestones=(2, 3), batch_size=64)


def test_probe_reaches_high_accuracy_on_separable_features():
    train, train_labels = blobs(641, seed=0)  # 641 = 10 x 64 + 1: the trailing batch of one is dropped
    val, val_labels = blobs(300, seed=1)
    result = train_linear_probe_on_features(train, train_labels, val, val_labels, SMALL, "cpu", seed=0)
    assert result["top1"]["feat4"] > 95.0
    assert result["top1"]["feat5"] < 60.0
    assert result["best_layer"] == "feat4" and result["best_top1"] == result["top1"]["feat4"]
    assert result["num_classes"] == 3 and result["num_train"] == 641 and result["num_val"] == 300
    log = result["epochs_log"]
    assert [record["epoch"] for record in log] == [1, 2, 3, 4]
    assert [record["lr"] for record in log] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert log[-1]["val_top1"] == result["top1"]
    assert log[-1]["train_loss"]["feat4"] < log[0]["train_loss"]["feat4"]


def test_probe_is_deterministic_for_a_seed():
    train, train_labels = blobs(200, seed=0)
    val, val_labels = blobs(100, seed=1)
    config = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=32)
    first, second, other = (train_linear_probe_on_features(train, train_labels, val, val_labels, config, "cpu", seed)
                            for seed in (5, 5, 6))
    assert first == second
    assert first["epochs_log"][0]["train_loss"] != other["epochs_log"][0]["train_loss"]


def test_heads_are_batchnorm_without_affine_then_linear():
    heads = build_probe_heads({"feat3": 6, "feat5": 4}, num_classes=5, generator=torch.Generator().manual_seed(0))
    for layer, dim in (("feat3", 6), ("feat5", 4)):
        norm, linear = heads[layer]
        assert isinstance(norm, nn.BatchNorm1d) and not norm.affine and norm.num_features == dim
        assert list(norm.parameters()) == []
        assert (linear.in_features, linear.out_features) == (dim, 5)
        assert bool((linear.bias == 0).all())
    groups = probe_parameter_groups(heads, weight_decay=1e-4)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def test_parameter_groups_exempt_normalisation_layers_from_weight_decay():
    module = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    decayed, exempt = probe_parameter_groups(module, weight_decay=1e-4)
    assert exempt["weight_decay"] == 0.0 and {id(p) for p in exempt["params"]} == {id(module[0].weight),
                                                                                    id(module[0].bias)}
    assert {id(p) for p in decayed["params"]} == {id(module[1].weight), id(module[1].bias)}


def test_config_defaults_and_validation():
    config = from_dict(LinearProbeConfig, {"epochs": 28, "milestones": [7, 14, 21]}, where="probe")
    assert config == LinearProbeConfig(28, (7, 14, 21), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                       nesterov=True, batch_size=256)
    with pytest.raises(ConfigError, match="probe: unknown key"):
        from_dict(LinearProbeConfig, {"epochs": 2, "milestones": [], "gamma": 0.1}, where="probe")
    with pytest.raises(ValueError, match="milestones"):
        LinearProbeConfig(epochs=5, milestones=(3, 2))
    with pytest.raises(ValueError, match="labels"):
        train, labels = blobs(10, seed=0)
        train_linear_probe_on_features(train, labels[:5], train, labels, SMALL, "cpu", seed=0)


class BrightnessSource:
    """A tiny image source: class 1 images are bright, class 0 dark; augmentation is a seeded flip."""

    def __init__(self, num_images: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (num_images,), generator=generator)
        base = torch.randint(0, 100, (num_images, 3, 12, 12), generator=generator, dtype=torch.uint8)
        self.images = base + (self.labels * 150).to(torch.uint8).view(-1, 1, 1, 1)
        self.augment_flags = []

    def __len__(self):
        return len(self.images)

    def load_batch(self, indices, augment=False, generator=None):
        self.augment_flags.append(augment)
        batch = normalise_uint8(self.images[indices])
        if augment and bool(torch.rand(1, generator=generator) < 0.5):
            batch = batch.flip(3)
        return batch


def test_online_probe_trains_through_a_frozen_trunk():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]}).train()
    plan = pooling_plan(backbone, 12, 32)
    state_before = {key: value.clone() for key, value in backbone.state_dict().items()}
    train_source, val_source = BrightnessSource(96, seed=0), BrightnessSource(40, seed=1)
    config = LinearProbeConfig(epochs=3, milestones=(2,), batch_size=32)
    result = train_linear_probe_online(backbone, train_source, val_source, train_source.labels, val_source.labels,
                                       ["feat1", "feat5"], plan, config, "cpu", seed=0)
    assert result["top1"]["feat1"] > 90.0
    assert len(result["epochs_log"]) == 3 and result["best_layer"] in ("feat1", "feat5")
    assert set(train_source.augment_flags) == {True} and set(val_source.augment_flags) == {False}
    assert backbone.training  # the caller's mode is restored
    for key, value in backbone.state_dict().items():  # no weight and no BatchNorm statistic moved
        torch.testing.assert_close(value, state_before[key], rtol=0, atol=0)
