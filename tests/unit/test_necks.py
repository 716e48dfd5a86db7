"""Initialisation as the reference's: Kaiming (fan_in, ReLU) for ODC's neck, normal(0, 0.01) and zero bias for
the classification heads of DC, ODC and ROT (CLS and CODC build theirs with the same ``linear_head``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_challenge.methods import build_method
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.necks import ODCNeck, linear_head


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def test_odc_neck_is_kaiming_fan_in():
    torch.manual_seed(0)
    neck = ODCNeck(in_dim=2048, hidden_dim=512, out_dim=256)
    first, second = linear_layers(neck)
    # kaiming_normal_(fan_in, relu): std = sqrt(2 / fan_in) = sqrt(2 / 2048) and sqrt(2 / 512)
    assert float(first.weight.detach().std()) == pytest.approx(math.sqrt(2 / 2048), rel=0.02)
    assert float(second.weight.detach().std()) == pytest.approx(math.sqrt(2 / 512), rel=0.02)
    assert float(first.weight.detach().mean()) == pytest.approx(0.0, abs=1e-3)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in (first, second))


def test_linear_head_is_normal_001_with_zero_bias():
    torch.manual_seed(0)
    head = linear_head(512, 1000)
    assert float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
    assert torch.count_nonzero(head.bias) == 0


@pytest.mark.parametrize("method, options, head_in", [
    ("dc", {"num_clusters": 300, "pca_dims": 8}, 64),
    ("odc", {"num_clusters": 300}, 256),
    ("rot", {}, 64),
])
def test_method_heads_are_normal_001(method, options, head_in):
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet"})  # out_dim 64
    built = build_method(method, backbone, options, num_samples=10000)
    head = built.clustering.head if method == "odc" else built.head
    assert head.in_features == head_in
    assert float(head.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert torch.count_nonzero(head.bias) == 0
    if method == "odc":
        first, _ = linear_layers(built.clustering.neck)
        assert float(first.weight.detach().std()) == pytest.approx(math.sqrt(2 / 64), rel=0.05)


def neck_batchnorm(method: nn.Module) -> nn.BatchNorm1d:
    (norm,) = [module for module in method.clustering.neck.modules() if isinstance(module, nn.BatchNorm1d)]
    return norm


@pytest.mark.parametrize("options, momentum, synchronised", [
    ({}, 0.1, True),  # torch's default momentum; converted with the trunk under sync_bn (today's behaviour)
    ({"neck_bn_momentum": 0.001, "neck_sync_bn": False}, 0.001, False),  # the reference's neck
])
def test_odc_neck_batchnorm_momentum_and_synchronisation_are_options(options, momentum, synchronised):
    torch.manual_seed(0)
    built = build_method("odc", build_backbone({"name": "small_resnet"}), {"num_clusters": 4, **options},
                         num_samples=100)
    norm = neck_batchnorm(built)
    assert norm.momentum == momentum and built.clustering.neck.sync_batchnorm is synchronised
    # one training batch: running_mean = (1 - momentum) * 0 + momentum * (the batch's mean of the fc output)
    pooled = torch.randn(8, 64)
    hidden = built.clustering.neck.layers[0](pooled).detach()
    built.clustering.neck.train()(pooled)
    torch.testing.assert_close(norm.running_mean, momentum * hidden.mean(0))


def test_odc_neck_batchnorm_momentum_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="neck_bn_momentum"):
        build_method("odc", build_backbone({"name": "small_resnet"}), {"num_clusters": 4, "neck_bn_momentum": 0.0},
                     num_samples=100)
