"""The method registry (methods/__init__.py) and the declarations it exposes (methods/*_options.py): read without
torch, one per method, and the one place where a method's options are checked (with ConfigError naming the key)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ssl_challenge import methods
from ssl_challenge.core.config import ConfigError
from ssl_challenge.methods import codc_options
from ssl_challenge.methods.spec import LABELS, InputFile, MethodSpec, PseudoLabels
from ssl_challenge.stages.pretraining import input_file_digests

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def test_the_registry_and_every_declaration_import_without_torch():
    code = ("import sys, ssl_challenge.methods as m; specs = [m.method_spec(name) for name in m.METHODS]; "
            "print(len(specs), sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'numpy', 'faiss'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "7 []"


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_each_method_module_builds_from_its_own_declaration(name):
    spec = methods.method_spec(name)
    assert spec.module == methods.METHODS[name]
    assert methods.method_module(name).SPEC is spec  # the module checks its options with the planner's spec


def test_the_schemas_method_enum_is_the_registry():
    enum = SCHEMA["definitions"]["model"]["properties"]["method"]["enum"]
    assert enum == list(methods.METHODS)


def test_the_codc_pretext_methods_are_those_with_a_loss():
    assert methods.pretext_methods() == ["rot", "dc", "odc", "cls"]


def test_options_are_checked_in_one_place_with_one_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^models.odc.method_options.num_clusters: need at least 2 clusters, got 1"):
        methods.parse_options("odc", {"num_clusters": 1}, "models.odc.method_options")
    with pytest.raises(ConfigError, match=r"^models.rot.method_options: unknown key\(s\) \['head_std'\]"):
        methods.parse_options("rot", {"head_std": 0.1}, "models.rot.method_options")
    with pytest.raises(ConfigError, match=r"^models.dc.method_options.pca_dims: expected an integer, got str"):
        methods.parse_options("dc", {"pca_dims": "16"}, "models.dc.method_options")
    with pytest.raises(ConfigError, match=r"^m.base_method: expected one of \['rot', 'dc', 'odc', 'cls'\], got 'random'"):
        methods.parse_options("codc", {"base_method": "random", "labels_path": "l"}, "m")
    with pytest.raises(ConfigError, match=r"^unknown method 'rotnet'"):
        methods.method_spec("rotnet")
    parsed = methods.parse_options("cls", {"num_clusters": 4, "label_models": ["a", "b"]})
    assert (parsed.num_clusters, parsed.label_models, parsed.pca_dims, parsed.mixup_alpha) == (4, ("a", "b"), 256, 1.0)


def test_the_method_builds_with_the_same_check():
    from ssl_challenge.models.backbones import build_backbone

    backbone = build_backbone({"name": "small_resnet"})
    with pytest.raises(ConfigError, match=r"^method_options.num_clusters: need at least 2 clusters, got 1"):
        methods.build_method("odc", backbone, {"num_clusters": 1}, 100)


def round_options(base_method: str, base_options: dict, initial_weights: str = "W") -> dict:
    experiment = {"members": ["a", "b"], "online_options": {"min_cluster_size": 5}, "num_clusters": 8,
                  "pca_dims": 16, "loss_weight": 0.5, "seed": 3, "label_source": "peers"}
    return codc_options.round_options(experiment, base_method, base_options, "L", initial_weights)


def test_a_codc_round_reads_its_labels_its_weights_and_what_its_own_method_reads():
    options = round_options("cls", {"num_clusters": 4, "label_models": ["x"], "labels_path": "C"})
    assert list(options) == ["min_cluster_size", "base_method", "base_options", "labels_path", "initial_weights",
                             "num_clusters", "loss_weight", "seed"]  # the order the rule params have always had
    files = [(entry.path, entry.kind, entry.file, entry.method) for entry in methods.input_files("codc", options)]
    assert files == [(("labels_path",), "labels", "L", "codc"), (("initial_weights",), "weights", "W", "codc"),
                     (("base_options", "labels_path"), "labels", "C", "cls")]
    assert methods.built_methods("codc", options) == ["codc", "cls"]
    from_scratch = round_options("dc", {}, initial_weights="")
    assert [entry.path for entry in methods.input_files("codc", from_scratch)] == [("labels_path",)]
    assert methods.built_methods("codc", from_scratch) == ["codc", "dc"]


def test_an_external_model_reads_its_checkpoint():
    files = methods.input_files("external", {"weights": "w.pth", "layout": "vissl"})
    assert [(entry.path, entry.kind, entry.file) for entry in files] == [(("weights",), "checkpoint", "w.pth")]
    with pytest.raises(ConfigError, match=r"^models.ext.method_options.weights: the path of the checkpoint"):
        methods.input_files("external", {}, "models.ext.method_options")


def test_cls_asks_for_pseudo_labels_with_its_defaults():
    request = methods.pseudo_labels("cls", {"num_clusters": 4, "label_models": ["x", "y"]})
    assert request == PseudoLabels(models=("x", "y"), num_clusters=4, pca_dims=256, models_option="label_models")
    assert request.job_options(seed=7) == {"num_clusters": 4, "pca_dims": 256, "seed": 7}
    assert methods.pseudo_labels_option("cls") == "labels_path"
    assert methods.pseudo_labels("dc", {}) is None and methods.pseudo_labels_option("dc") is None


def test_a_codc_experiment_gives_the_round_labels_of_its_peers_or_of_the_member_itself():
    experiment = {"members": ["a", "b", "c"], "label_source": "peers", "num_clusters": 8, "pca_dims": 16, "seed": 3}
    assert codc_options.feature_sources(experiment, "b") == ["a", "c"]
    assert codc_options.feature_sources({**experiment, "label_source": "self"}, "b") == ["b"]
    assert codc_options.round_label_options(experiment, 2) == {"num_clusters": 8, "pca_dims": 16, "seed": 5}
    with pytest.raises(ConfigError, match=r"^codc.x.online_options.memory_momentum: expected 0 < m <= 1, got 0.0"):
        codc_options.check_experiment({"online_options": {"memory_momentum": 0.0}}, "codc.x")


def test_a_declaration_names_only_its_own_options_and_known_kinds():
    @dataclass(frozen=True)
    class Options:
        path: str = ""

    MethodSpec(module="m", options=Options, input_files=(InputFile("path", LABELS),))
    with pytest.raises(ValueError, match=r"input file options \['file'\] are not fields of Options"):
        MethodSpec(module="m", options=Options, input_files=(InputFile("file", LABELS),))
    with pytest.raises(ValueError, match=r"input file kinds \['images'\]"):
        MethodSpec(module="m", options=Options, input_files=(InputFile("path", "images"),))
    with pytest.raises(ValueError, match="pseudo_labels needs an input file option"):
        MethodSpec(module="m", options=Options, pseudo_labels=lambda options: None)


def test_a_runs_input_file_digests_follow_the_files_content(tmp_path):
    labels, weights, base_labels = tmp_path / "l.npz", tmp_path / "w.pth", tmp_path / "c.npz"
    for path in (labels, weights, base_labels):
        path.write_bytes(path.name.encode())
    options = round_options("cls", {"num_clusters": 4, "label_models": ["x"], "labels_path": str(base_labels)})
    options.update(labels_path=str(labels), initial_weights=str(weights))
    digests = input_file_digests("codc", options)
    assert set(digests) == {"labels_path", "initial_weights", "base_options"}
    assert set(digests["base_options"]) == {"labels_path"}
    base_labels.write_bytes(b"new labels")
    changed = input_file_digests("codc", options)
    assert changed["base_options"] != digests["base_options"] and changed["labels_path"] == digests["labels_path"]
    assert input_file_digests("rot", {}) == {}
