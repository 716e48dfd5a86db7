"""The reference ResNet-50 pooling table, the pooling chosen for other backbones, and the recorded plan."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.pooling import (REFERENCE_RESNET50_POOLING, choose_pooling, pool_features,
                                          pooled_side, pooling_plan)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def resnet50():
    return build_backbone({"name": "resnet50"})


def test_reference_table_is_the_protocol_one():
    assert REFERENCE_RESNET50_POOLING == {"feat1": (10, 10, 4), "feat2": (16, 8, 0), "feat3": (13, 5, 0),
                                          "feat4": (8, 3, 0), "feat5": (6, 1, 0)}


def test_reference_plan_gives_the_protocol_dimensions_at_224(resnet50):
    plan = pooling_plan(resnet50, 224, "reference")
    assert {layer: entry["dim"] for layer, entry in plan.items()} == {
        "feat1": 9216, "feat2": 9216, "feat3": 8192, "feat4": 9216, "feat5": 8192}
    maps = {layer: torch.randn(2, entry["channels"], entry["spatial_size"], entry["spatial_size"])
            for layer, entry in plan.items()}
    pooled = pool_features(maps, plan)
    assert {layer: tuple(t.shape) for layer, t in pooled.items()} == {
        "feat1": (2, 9216), "feat2": (2, 9216), "feat3": (2, 8192), "feat4": (2, 9216), "feat5": (2, 8192)}
    # zero padding counts in the mean, as in nn.AvgPool2d (the reference module)
    torch.testing.assert_close(pooled["feat1"], nn.AvgPool2d(10, 10, 4)(maps["feat1"]).flatten(1))


@pytest.mark.parametrize("channels, spatial_size, target_dim", [
    (8, 64, 2048), (16, 64, 2048), (32, 16, 2048), (64, 8, 2048), (64, 112, 9216), (2048, 7, 8192),
    (7, 13, 1000), (3, 5, 1), (512, 4, 100),
])
def test_choose_pooling_is_closest_to_target_and_covers_the_map(channels, spatial_size, target_dim):
    kernel, stride, padding = choose_pooling(channels, spatial_size, target_dim)
    side = pooled_side(spatial_size, kernel, stride, padding)
    best_possible = min(abs(channels * s * s - target_dim) for s in range(1, spatial_size + 1))
    assert abs(channels * side * side - target_dim) == best_possible
    assert padding == 0 and stride <= kernel <= spatial_size
    assert (side - 1) * stride + kernel == spatial_size  # the windows reach the last row and column


def test_choose_pooling_hand_values():
    assert choose_pooling(8, 64, 2048) == (4, 4, 0)     # 8 x 16 x 16 = 2048 exactly
    assert choose_pooling(16, 64, 2048) == (14, 5, 0)   # side 11: 1936 is nearer than side 12: 2304
    assert choose_pooling(512, 4, 100) == (4, 4, 0)     # below the channel count: the global average
    with pytest.raises(ValueError, match="target_dim"):
        choose_pooling(8, 8, 0)


def test_small_resnet_plan_at_64px_is_recorded_and_json_able():
    backbone = build_backbone({"name": "small_resnet"}).train()
    running_mean_before = backbone.stem[1].running_mean.clone()
    plan = pooling_plan(backbone, 64, "2048")  # the config's string form
    assert backbone.training  # the dry forward ran in eval mode and restored the flag
    torch.testing.assert_close(backbone.stem[1].running_mean, running_mean_before)
    assert json.loads(json.dumps(plan)) == plan
    for layer, entry in plan.items():
        assert set(entry) == {"kernel", "stride", "padding", "dim", "channels", "spatial_size", "output_size"}
        assert entry["dim"] == entry["channels"] * entry["output_size"] ** 2
        assert abs(entry["dim"] - 2048) <= 0.25 * 2048, layer
    with torch.no_grad():
        pooled = pool_features(backbone.eval()(torch.randn(3, 3, 64, 64)), plan, ["feat2", "feat5"])
    assert {layer: t.shape[1] for layer, t in pooled.items()} == {"feat2": plan["feat2"]["dim"],
                                                                  "feat5": plan["feat5"]["dim"]}


def test_plan_and_pool_errors_name_the_problem():
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]})
    with pytest.raises(ValueError, match="features.pooling"):
        pooling_plan(backbone, 32, "big")
    with pytest.raises(ValueError, match="feat"):  # the reference kernels do not fit 16 px maps
        pooling_plan(backbone, 16, "reference")
    plan = pooling_plan(backbone, 32, 256)
    maps = backbone.eval()(torch.zeros(1, 3, 32, 32))
    with pytest.raises(KeyError, match="feat7"):
        pool_features(maps, plan, ["feat7"])
    larger = backbone(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="another input size"):
        pool_features(larger, plan)
