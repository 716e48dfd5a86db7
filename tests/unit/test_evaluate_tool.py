"""tools/evaluate.py's config: only the one external model, the tracks asked for, the site file over real data."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import evaluate  # noqa: E402  (tools/evaluate.py)


def test_model_names_and_tracks():
    assert evaluate.model_name(Path("/x/ResNet50-ep200.pth"), None) == "resnet50_ep200"
    assert evaluate.model_name(Path("/x/200ep.pth"), None) == "model_200ep"
    with pytest.raises(SystemExit, match="NAME='My-Model'"):
        evaluate.model_name(Path("/x/a.pth"), "My-Model")
    default = evaluate.default_tracks(REPO / "config" / "config.yaml")
    assert default == ["voc07_svm", "voc07_lowshot", "places205_linear", "voc07_detection"]  # as config.yaml runs
    assert evaluate.parse_tracks(None, default) == default
    assert evaluate.parse_tracks("voc07_svm, voc07_detection", default) == ["voc07_svm", "voc07_detection"]
    with pytest.raises(SystemExit, match=r"unknown track\(s\) \['svm'\]"):
        evaluate.parse_tracks("svm", default)


def test_the_derived_config_holds_only_the_external_model(tmp_path):
    weights = tmp_path / "model.pth"
    config = evaluate.derived_config(REPO / "config" / "config.yaml", "mine", weights, "vissl", "resnet50",
                                     ["voc07_svm", "voc07_detection"])
    assert config["models"] == {"mine": {"method": "external", "backbone": {"name": "resnet50"}, "epochs": 0,
                                         "optimizer": {"lr": 0.1},
                                         "method_options": {"weights": str(weights), "layout": "vissl"}}}
    assert config["codc"] == {} and config["concatenations"] == {} and config["ablation"]["experiments"] == []
    assert config["evaluation"]["voc07_detection"]["enabled"] and not config["evaluation"]["imagenet_linear"]["enabled"]
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["data"] == default["data"] and config["features"] == default["features"]
    targets = evaluate.track_targets(config, "mine", ["voc07_svm", "voc07_detection"])
    layers = default["evaluation"]["voc07_svm"]["layers"]
    assert targets == {"voc07_svm": [f"results/eval/mine/voc07_svm/{layer}.json" for layer in layers],
                       "voc07_detection": ["results/eval/mine/voc07_detection.json"]}


def test_with_a_site_file_the_base_is_the_full_scale_on_the_site_roots(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "config").mkdir(parents=True)
    (checkout / "config" / "site.yaml").write_text(yaml.safe_dump({"data": {"imagenet_root": "/site/imagenet"}}))
    monkeypatch.setattr(evaluate, "REPO", checkout)
    assert evaluate.default_base() == checkout / "config" / "challenge.yaml"
    config = evaluate.derived_config(REPO / "config" / "challenge.yaml", "mine", tmp_path / "m.pth", "mmselfsup",
                                     "resnet50", ["voc07_svm"])
    assert config["data"]["source"] == "real" and config["data"]["imagenet_root"] == "/site/imagenet"
    monkeypatch.setattr(evaluate, "REPO", tmp_path / "no_site")
    assert evaluate.default_base() == tmp_path / "no_site" / "config" / "config.yaml"
