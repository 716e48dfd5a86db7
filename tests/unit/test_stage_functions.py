"""Workflow stage functions on tiny trees in the real layouts: features keep the file lists' order and metadata, and
the Places205 probe runs both ways (cached features, and online through the frozen trunk or a concatenation's
members' trunks)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from layouts_fixture import make_tiny_places205, make_tiny_voc07
from ssl_challenge.stages.places205_track import evaluate_places205_linear
from ssl_challenge.stages.features import extract_split_features, load_features, voc07_split_with_features
from ssl_challenge.models.backbones import build_backbone

LOG = logging.getLogger("test")
FEATURES = {"resize_shorter": 32, "image_size": 32, "layers": ["feat4", "feat5"], "pooling": "64", "batch_size": 4}
PROBE = {"layers": ["feat4", "feat5"], "epochs": 2, "milestones": [1], "lr": 0.01, "batch_size": 4, "seed": 0}


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet"})
    path = tmp_path / "model.pth"
    torch.save({"backbone": backbone.state_dict(), "backbone_config": backbone.config, "method": "random"}, path)
    return path


def test_voc07_features_follow_the_image_set_order(tmp_path, tiny_model):
    torch.set_num_threads(1)
    classes = ["cat", "dog", "bird"]
    truth = make_tiny_voc07(tmp_path / "VOCdevkit", classes, n_trainval=5, n_test=4)
    output = tmp_path / "features" / "voc07_trainval.npz"
    test_output = tmp_path / "features" / "voc07_test.npz"
    extract_split_features(str(tiny_model), {"voc07_trainval": str(output), "voc07_test": str(test_output)},
                           FEATURES, {"voc07": str(tmp_path / "VOCdevkit")}, classes, threads=1, log=LOG)
    features, metadata = load_features(output)
    assert metadata["image_ids"] == list(truth["trainval"]["ids"])
    assert load_features(test_output)[1]["image_ids"] == list(truth["test"]["ids"])
    assert features["feat5"].shape[0] == 5 and features["feat5"].dtype == np.float32
    assert metadata["pooling_plan"]["feat4"]["dim"] == features["feat4"].shape[1]
    x, labels, names = voc07_split_with_features(output, "feat5", tmp_path / "VOCdevkit", "trainval", classes)
    assert names == classes and labels.shape == (5, 3) and x.shape[0] == 5


@pytest.mark.parametrize("mode", ["cached", "online", "online_concatenation"])
def test_places205_probe_runs_in_both_modes(tmp_path, tiny_model, mode):
    torch.set_num_threads(1)
    make_tiny_places205(tmp_path / "places205", n_classes=3, per_class_train=4, per_class_val=2)
    roots = {"places205": str(tmp_path / "places205")}
    if mode == "cached":
        inputs = {subset: str(tmp_path / f"places205_{subset}.npz") for subset in ("train", "val")}
        extract_split_features(str(tiny_model), {f"places205_{subset}": path for subset, path in inputs.items()},
                               FEATURES, roots, [], threads=1, log=LOG)
    elif mode == "online":
        inputs = {"model": str(tiny_model)}
    else:  # a concatenation: its members' model files, the second member narrower than the first
        torch.manual_seed(1)
        member = build_backbone({"name": "small_resnet", "widths": [4, 8, 8, 16]})
        torch.save({"backbone": member.state_dict(), "backbone_config": member.config, "method": "random"},
                   tmp_path / "member.pth")
        inputs = {"members": [str(tiny_model), str(tmp_path / "member.pth")]}
    output, metrics = tmp_path / "probe.json", tmp_path / "probe.metrics.jsonl"
    evaluate_places205_linear(inputs, PROBE | {"mode": mode.split("_")[0]}, FEATURES, roots["places205"], str(output),
                              str(metrics), threads=1, log=LOG)
    result = json.loads(output.read_text())
    assert set(result["top1"]) == {"feat4", "feat5"}
    assert all(0.0 <= value <= 100.0 for value in result["top1"].values())
    assert result["num_train"] == 12 and result["num_val"] == 6
    assert len(metrics.read_text().splitlines()) == 2
