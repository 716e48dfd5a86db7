"""The full-scale configuration, dry-run against tiny trees in the real ImageNet, VOC07 and Places205 layouts."""
from __future__ import annotations

import yaml

from conftest import REPO, run_snakemake
from dryrun import planned_jobs
from layouts_fixture import make_tiny_imagenet, make_tiny_places205, make_tiny_voc07

VOC_CLASSES = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())["data"]["voc07_classes"]


def challenge_config_with_roots(tmp_path, classes=VOC_CLASSES, voc_classes_on_disk=VOC_CLASSES):
    imagenet = tmp_path / "imagenet"
    voc = tmp_path / "VOCdevkit"
    places = tmp_path / "places205"
    make_tiny_imagenet(imagenet, with_val=True)
    make_tiny_voc07(voc, voc_classes_on_disk, n_trainval=4, n_test=4)
    make_tiny_places205(places)
    config = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
    config["data"].update(imagenet_root=str(imagenet), voc07_root=str(voc), places205_root=str(places),
                          voc07_classes=list(classes))
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_challenge_config_dry_run_on_real_layouts(workflow_copy, tmp_path):
    config = challenge_config_with_roots(tmp_path)
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", str(config))
    output = result.stdout + result.stderr
    assert "prepare_data" not in output  # real roots: nothing to build
    for layer in ("feat1", "feat5"):
        assert f"voc07_svm/{layer}.json" in output
    jobs = planned_jobs(result.stdout)
    challenge = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
    pretrained = {job.model for job in jobs if job.rule == "pretrain"}
    assert pretrained == set(challenge["models"]) == {"random", "rot", "dc", "odc", "cls"}
    rounds = {(dict(job.wildcards)["experiment"], dict(job.wildcards)["member"]) for job in jobs
              if job.rule == "codc_round"}
    assert rounds == {("codc2", "dc"), ("codc2", "rot"), ("codc2_self", "dc"), ("codc2_self", "rot"),
                      ("codc3", "dc"), ("codc3", "rot"), ("codc3", "cls")}
    assert sum(job.rule == "codc_labels" for job in jobs) == len(rounds)
    assert [job.rule for job in jobs].count("ablation_tables") == 1
    assert {"pseudo_labels", "concat_voc07_features", "dc_vs_odc", "leaderboard"} <= {job.rule for job in jobs}
    # the Places205 probe is online for every row, the concatenations' too: no Places205 feature file
    assert not {"extract_places205_features", "concat_places205_features"} & {job.rule for job in jobs}
    probed = {job.model for job in jobs if job.rule == "imagenet_linear"}  # the legacy extra track
    assert pretrained | {"codc3@r1.cls"} <= probed


def test_missing_data_root_is_named(workflow_copy, tmp_path):
    config_path = challenge_config_with_roots(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["data"]["imagenet_root"] = str(tmp_path / "nowhere")
    config_path.write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config_path), check=False)
    assert result.returncode != 0
    assert "nowhere" in result.stdout + result.stderr


def test_voc_class_list_mismatch_is_reported(workflow_copy, tmp_path):
    config = challenge_config_with_roots(tmp_path, voc_classes_on_disk=VOC_CLASSES[:-1])
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "tvmonitor" in result.stdout + result.stderr
