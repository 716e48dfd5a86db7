"""External checkpoints: each key layout, saved from a randomly initialised torchvision ResNet-50, maps strictly
onto the project's ResNet-50 backbone; wrong or partial checkpoints are errors that list the keys; the conversion
writes a model file that the evaluation stages read like any other."""
from __future__ import annotations

import logging

import pytest
import torch
from torchvision.models import resnet50

from conftest import Payload
from ssl_challenge.core.config import ConfigError
from ssl_challenge.core.io import ModelFileError
from ssl_challenge.models.backbones import build_backbone, load_backbone
from ssl_challenge.models.external import ExternalCheckpointError, match_backbone, trunk_state_dict
from ssl_challenge.stages.pretraining import convert_checkpoint

torch.set_num_threads(1)
LOG = logging.getLogger("test_external")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(7)
    network = resnet50(weights=None)
    for module in network.modules():  # non-trivial BatchNorm statistics, so that a wrong mapping shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return network.state_dict()


def in_layout(state: dict, layout: str) -> dict:
    trunk = {key: value for key, value in state.items() if not key.startswith("fc.")}
    if layout == "torchvision":
        return dict(state)  # the classifier is in the file and is dropped
    if layout in ("openselfsup", "mmselfsup"):
        return {"meta": {"epoch": 200, "config": "a config text"},
                "state_dict": {**{f"backbone.{key}": value for key, value in trunk.items()},
                               "neck.mlp.0.weight": torch.zeros(4, 2048), "head.fc_cls.weight": torch.zeros(3, 4)}}
    return {"classy_state_dict": {"base_model": {"model": {
        "trunk": {f"_feature_blocks.{key}": value for key, value in trunk.items()},
        "heads": {"0.clf.0.weight": torch.zeros(10, 2048)}}}}}


def external_config(path, layout, backbone="resnet50"):
    return {"method": "external", "backbone": {"name": backbone}, "epochs": 0, "optimizer": {"lr": 0.1},
            "method_options": {"weights": str(path), "layout": layout}}


@pytest.mark.parametrize("layout", ["torchvision", "openselfsup", "mmselfsup", "vissl"])
def test_each_layout_loads_the_same_weights(tmp_path, reference, layout):
    path = tmp_path / f"{layout}.pth"
    torch.save(in_layout(reference, layout), path)
    model_file = convert_checkpoint(external_config(path, layout), tmp_path, "models.ext", LOG)
    backbone, config = load_backbone(model_file, torch.device("cpu"))
    assert config["name"] == "resnet50"
    loaded = backbone.state_dict()
    for key, value in reference.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    saved = torch.load(model_file, weights_only=True)
    assert saved["method"] == "external" and saved["epochs"] == 0
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_missing_and_unexpected_keys_are_listed(reference):
    expected = build_backbone({"name": "resnet50"}).state_dict()
    partial = {key: value for key, value in reference.items() if not key.startswith("layer4.2.")}
    partial["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ExternalCheckpointError) as error:
        match_backbone(trunk_state_dict(partial, "torchvision", "ckpt.pth"), expected, "ckpt.pth")
    message = str(error.value)
    assert "ckpt.pth" in message and "missing key(s): layer4.2.bn1.bias" in message
    assert "1 unexpected key(s): layer5.0.conv1.weight" in message
    wrong_shape = dict(reference, **{"conv1.weight": torch.zeros(64, 2, 7, 7)})
    with pytest.raises(ExternalCheckpointError, match=r"conv1.weight \(64, 2, 7, 7\) != \(64, 3, 7, 7\)"):
        match_backbone(trunk_state_dict(wrong_shape, "torchvision", "x"), expected, "x")


def test_old_files_without_batchnorm_counters_load(reference):
    expected = build_backbone({"name": "resnet50"}).state_dict()
    old = {key: value for key, value in reference.items() if not key.endswith("num_batches_tracked")}
    mapped = match_backbone(trunk_state_dict(old, "torchvision", "old.pth"), expected, "old.pth")
    assert int(mapped["bn1.num_batches_tracked"]) == 0 and torch.equal(mapped["bn1.weight"], reference["bn1.weight"])


def test_a_checkpoint_in_another_layout_is_refused(tmp_path, reference):
    path = tmp_path / "vissl.pth"
    torch.save(in_layout(reference, "vissl"), path)
    with pytest.raises(ExternalCheckpointError, match="no key starts with 'backbone.'"):
        convert_checkpoint(external_config(path, "openselfsup"), tmp_path, "models.ext", LOG)
    with pytest.raises(ExternalCheckpointError, match="missing key"):  # VISSL's nesting read as a state dict
        convert_checkpoint(external_config(path, "torchvision"), tmp_path, "models.ext", LOG)
    torch.save(in_layout(reference, "torchvision"), path)
    with pytest.raises(ExternalCheckpointError, match="no 'classy_state_dict'"):
        convert_checkpoint(external_config(path, "vissl"), tmp_path, "models.ext", LOG)
    assert not (tmp_path / "model.pth").exists()


def test_options_and_epochs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="models.ext.method_options.layout"):
        convert_checkpoint(external_config(tmp_path / "w.pth", "timm"), tmp_path, "models.ext", LOG)
    with pytest.raises(ConfigError, match="models.ext.epochs"):
        convert_checkpoint({**external_config(tmp_path / "w.pth", "vissl"), "epochs": 3}, tmp_path, "models.ext", LOG)
    with pytest.raises(ConfigError, match="unknown key"):
        convert_checkpoint({**external_config(tmp_path / "w.pth", "vissl"),
                          "method_options": {"weights": "w.pth", "prefix": "x"}}, tmp_path, "models.ext", LOG)


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "planted.pth"
    torch.save({"state_dict": Payload(marker)}, path)
    with pytest.raises(ModelFileError, match="refused"):
        convert_checkpoint(external_config(path, "openselfsup"), tmp_path, "models.ext", LOG)
    assert not marker.exists()
