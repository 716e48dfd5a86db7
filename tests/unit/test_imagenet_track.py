"""The legacy ImageNet linear track on a tiny tree in the real layout (train/<wnid>/, val/<wnid>/)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from layouts_fixture import make_tiny_imagenet
from ssl_challenge.data.imagenet import list_imagenet_labelled
from ssl_challenge.stages.imagenet_track import evaluate_imagenet_linear
from ssl_challenge.models.backbones import build_backbone

torch.set_num_threads(1)


def test_labels_follow_the_training_folders(tmp_path):
    root = tmp_path / "imagenet"
    make_tiny_imagenet(root, n_classes=3, per_class=2, with_val=True)
    paths, labels, classes = list_imagenet_labelled(root, "train")
    assert classes == ["n01000000", "n01000001", "n01000002"]
    assert labels == [0, 0, 1, 1, 2, 2] and [path.parent.name for path in paths] == [classes[i] for i in labels]
    val_paths, val_labels, _ = list_imagenet_labelled(root, "val", classes)
    assert val_labels == labels and all(path.parts[-3] == "val" for path in val_paths)
    # a val folder that is not a training class, and images outside class folders, are refused by name
    with pytest.raises(ValueError, match="n01000002"):
        list_imagenet_labelled(root, "val", classes[:2])
    (root / "val" / "n01000000" / "n01000000_1.JPEG").rename(root / "val" / "loose.JPEG")
    with pytest.raises(FileNotFoundError, match="outside class folders"):
        list_imagenet_labelled(root, "val", classes)


def test_track_probes_a_saved_model_on_train_and_val(tmp_path):
    root = tmp_path / "imagenet"
    make_tiny_imagenet(root, n_classes=2, per_class=4, with_val=True)
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8], "sobel": True})
    model_path = tmp_path / "model.pth"
    torch.save({"backbone": backbone.state_dict(), "backbone_config": backbone.config}, model_path)
    probe = {"enabled": True, "layers": ["feat4", "feat5"], "mode": "online", "epochs": 2, "milestones": [1],
             "lr": 0.01, "batch_size": 4, "seed": 0}
    features = {"resize_shorter": 16, "image_size": 12, "pooling": "64", "layers": ["feat5"], "batch_size": 8}
    output, metrics = tmp_path / "imagenet_linear.json", tmp_path / "imagenet_linear.metrics.jsonl"
    result = evaluate_imagenet_linear(str(model_path), probe, features, str(root), str(output), str(metrics),
                                      threads=1, log=logging.getLogger("test"))
    written = json.loads(output.read_text())
    assert written == json.loads(json.dumps(result))
    assert set(written["top1"]) == {"feat4", "feat5"} and written["best_layer"] in ("feat4", "feat5")
    assert (written["num_classes"], written["num_train"], written["num_val"]) == (2, 8, 8)
    assert written["config"]["epochs"] == 2 and written["config"]["nesterov"] is True
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]
    assert [record["lr"] for record in records] == pytest.approx([0.01, 0.001])
