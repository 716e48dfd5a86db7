"""config/fullscale_check.yaml (the miniature run by `make fullscale_check`) changes only size keys of
config/challenge.yaml: compared key by key against an explicit allow-list, so that the miniature runs the
full-scale configuration and not a look-alike."""
from __future__ import annotations

import copy
import fnmatch
import re
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, run_snakemake
from dryrun import planned_jobs

CHALLENGE = REPO / "config" / "challenge.yaml"
MINIATURE = REPO / "config" / "fullscale_check.yaml"

# Dotted key paths (fnmatch patterns; `*` is one model or experiment name) the miniature may change, and why.
SIZE_KEYS = {
    # where the data is: the miniature tree instead of /datasets
    "data.imagenet_root", "data.voc07_root", "data.places205_root",
    # image sizes (ResNet-50 on the CPU) and the pooling that goes with them (the reference table is for 224 px)
    "pretrain_data.image_size", "pretrain_data.resize_shorter",
    "features.image_size", "features.resize_shorter", "features.pooling",
    # epochs, batch sizes, k, and the snapshot epochs that must lie within the epochs
    "models.*.epochs", "models.*.batch_size", "models.*.snapshot_epochs", "models.*.method_options.num_clusters",
    "codc.*.epochs", "codc.*.batch_size", "codc.*.num_clusters",
    "evaluation.places205_linear.epochs", "evaluation.places205_linear.batch_size",
    "evaluation.imagenet_linear.epochs", "evaluation.imagenet_linear.batch_size",
    # SVM costs, and the low-shot sizes 80 trainval images allow (k positives need 19 k negatives)
    "evaluation.voc07_svm.costs", "evaluation.voc07_svm.extra_powers",
    "evaluation.voc07_lowshot.costs", "evaluation.voc07_lowshot.extra_powers",
    "evaluation.voc07_lowshot.k_values", "evaluation.voc07_lowshot.num_samples",
    # detection: iterations and their schedule, images per batch, image and RoI sizes, proposal and sample counts
    "evaluation.voc07_detection.iterations", "evaluation.voc07_detection.steps",
    "evaluation.voc07_detection.warmup_iterations", "evaluation.voc07_detection.images_per_batch",
    "evaluation.voc07_detection.min_size", "evaluation.voc07_detection.max_size",
    "evaluation.voc07_detection.roi_output_size", "evaluation.voc07_detection.rpn_*_top_n_*",
    "evaluation.voc07_detection.rpn_batch_size_per_image", "evaluation.voc07_detection.box_batch_size_per_image",
    "evaluation.voc07_detection.checkpoint_every",
    # how many models get a detector (one: the miniature's barely trained trunks make any detector diverge)
    "evaluation.voc07_detection.models",
    # threads per job and the CPU numerics mode: run-time only (2 jobs side by side on 2 cores, oneDNN on)
    "resources.*",
}


def leaves(tree, prefix=""):
    """``{dotted path: value}`` of every non-mapping value (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    found = {}
    for key, value in tree.items():
        found.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def merged(base, overlay):
    """Snakemake's merge of configfiles given one after the other (mappings merged, everything else replaced)."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def is_size_key(path):
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SIZE_KEYS)


def differences(full, miniature):
    full_leaves, mini_leaves = leaves(full), leaves(miniature)
    return sorted(path for path in full_leaves.keys() | mini_leaves.keys()
                  if full_leaves.get(path, "<absent>") != mini_leaves.get(path, "<absent>"))


def test_miniature_changes_only_size_keys():
    full = yaml.safe_load(CHALLENGE.read_text())
    overlay = yaml.safe_load(MINIATURE.read_text())
    changed = differences(full, merged(full, overlay))
    assert changed, "the miniature changes nothing"
    assert [path for path in changed if not is_size_key(path)] == []
    # and it only overrides keys the full scale sets: no new model, experiment or option slips in
    assert [path for path in leaves(overlay) if path not in leaves(full)] == []


@pytest.mark.parametrize("path, value", [
    ("models.dc.optimizer.lr", 0.05),                      # a recipe value
    ("models.dc.backbone.sobel", False),                   # a pipeline step
    ("codc.codc2.label_source", "self"),                   # the experiment's design
    ("evaluation.voc07_svm.layers", ["feat5"]),            # what the tracks evaluate
    ("models.extra", {"method": "rot"}),                   # a new model
])
def test_comparison_catches_a_change_outside_the_allow_list(path, value):
    full = yaml.safe_load(CHALLENGE.read_text())
    overlay = yaml.safe_load(MINIATURE.read_text())
    keys = path.split(".")
    node = overlay
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    changed = differences(full, merged(full, overlay))
    assert any(not is_size_key(changed_path) for changed_path in changed), path


def test_full_scale_keeps_the_reference_recipes():
    """The reference values of docs/protocols.md, where a typo would silently change the science."""
    models = yaml.safe_load(CHALLENGE.read_text())["models"]
    dc, odc, rot = models["dc"], models["odc"], models["rot"]
    assert dc["backbone"] == {"name": "resnet50", "sobel": True, "conv_init": "fan_in"}
    # mmcv's ResNet init for every trained model; the random baseline keeps fan_out (a NaN detector otherwise)
    assert {name: model["backbone"]["conv_init"] for name, model in models.items()} == {
        name: "fan_out" if name == "random" else "fan_in" for name in models}
    assert (dc["epochs"], dc["batch_size"], dc["optimizer"]) == (
        200, 512, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-5})
    assert dc["method_options"] == {"num_clusters": 10000, "pca_dims": 256, "kmeans_iterations": 20}
    assert (odc["epochs"], odc["batch_size"], odc["optimizer"], odc["schedule"]) == (
        440, 512, {"lr": 0.06, "momentum": 0.9, "weight_decay": 1e-5}, {"milestones": [400], "gamma": 0.4})
    assert odc["method_options"]["memory_momentum"] == 0.5 and odc["method_options"]["min_cluster_size"] == 20
    assert odc["method_options"]["num_clusters"] == 10000
    assert (odc["method_options"]["neck_bn_momentum"], odc["method_options"]["neck_sync_bn"]) == (0.001, False)
    detection = yaml.safe_load(CHALLENGE.read_text())["evaluation"]["voc07_detection"]
    assert (detection["frozen_affine_batchnorm"], detection["box_smooth_l1_beta"],
            detection["rpn_straddle_threshold"]) == (True, 1.0, 0)  # Detectron's AffineChannel, beta, straddle
    reference_pipeline = {"crop": "random_resized", "crop_scale": [0.08, 1.0], "flip": True, "rotation_degrees": 2,
                          "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 1.0, "hue": 0.5},
                          "grayscale_probability": 0.2}
    assert dc["augmentation"] == odc["augmentation"] == reference_pipeline
    assert rot["augmentation"] == {"crop": "random_resized", "crop_scale": [0.08, 1.0], "flip": True}
    assert (rot["epochs"], rot["optimizer"]["lr"], rot["schedule"]["milestones"]) == (70, 0.2, [30, 50])


def test_miniature_is_a_valid_configuration():
    full = yaml.safe_load(CHALLENGE.read_text())
    validate(merged(full, yaml.safe_load(MINIATURE.read_text())),
             str(REPO / "workflow" / "schemas" / "config.schema.yaml"))


def job_inputs_of(dry_run_output: str, rule: str) -> dict[str, list[str]]:
    """``{model wildcard: input files}`` of a dry run's jobs of ``rule``."""
    jobs = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:)", dry_run_output, flags=re.MULTILINE):
        if re.match(rf"(?:local)?rule {rule}:", block):
            model = re.search(r"^\s*wildcards: .*?\bmodel=([^,\s]+)", block, flags=re.MULTILINE).group(1)
            inputs = re.search(r"^\s*input: (.*)$", block, flags=re.MULTILINE)
            jobs[model] = inputs.group(1).split(", ") if inputs else []
    return jobs


def test_full_scale_dag_probes_each_concatenation_online_through_its_members(workflow_copy):
    """`make fullscale_check`'s command, dry, on a tiny miniature tree: every concatenation's Places205 probe runs
    online with its members' model files (in member order) as inputs, as single models run with their own; no
    Places205 feature file is made."""
    from ssl_challenge.data.miniature import build_miniature
    from ssl_challenge.plan import planning

    fashion_mnist = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["embedded"][
        "fashion_mnist_dir"]
    build_miniature(fashion_mnist, workflow_copy / "results" / "fullscale_check" / "data",
                    sizes={"imagenet_train": 10, "imagenet_val": 10, "voc_trainval": 60, "voc_test": 20,
                           "places_train": 10, "places_val": 10})
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--directory", "results/fullscale_check",
                           "--configfile", "config/challenge.yaml", "config/fullscale_check.yaml")
    config = merged(yaml.safe_load(CHALLENGE.read_text()), yaml.safe_load(MINIATURE.read_text()))
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # fills the defaults (rounds)
    assert config["evaluation"]["places205_linear"]["mode"] == "online"
    concatenations = planning.concatenations(config)
    assert set(concatenations) == {"codc2@r1.concat", "codc2_self@r1.concat", "codc3@r1.concat"}
    probes = job_inputs_of(result.stdout, "linear_probe")
    for name, members in concatenations.items():
        assert probes[name] == [f"results/models/{member}/model.pth" for member in members], name
    assert probes["codc3@r1.concat"] == [f"results/models/codc3@r1.{member}/model.pth"
                                         for member in ("dc", "rot", "cls")]
    for name in planning.configured_models(config):
        assert probes[name] == [f"results/models/{name}/model.pth"]
    rules = {job.rule for job in planned_jobs(result.stdout)}
    assert "extract_places205_features" not in rules and "concat_places205_features" not in rules
    assert "concat_voc07_features" in rules  # the SVM tracks still read the concatenated features


def test_readme_job_table_is_generated_from_the_current_configuration():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "job_table.py"), "--check"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
