"""The legacy ImageNet linear track in the DAG: off by default, one job per trunk model when enabled on real
layouts (train/ and val/ class folders), refused by key on the embedded data or without val/."""
from __future__ import annotations

import yaml

from conftest import REPO, run_snakemake
from dryrun import planned_jobs
from layouts_fixture import make_tiny_imagenet, make_tiny_places205, make_tiny_voc07

VOC_CLASSES = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())["data"]["voc07_classes"]


def challenge_config(tmp_path, enabled: bool, with_val: bool = True):
    roots = {"imagenet_root": tmp_path / "imagenet", "voc07_root": tmp_path / "VOCdevkit",
             "places205_root": tmp_path / "places205"}
    make_tiny_imagenet(roots["imagenet_root"], with_val=with_val)
    make_tiny_voc07(roots["voc07_root"], VOC_CLASSES, n_trainval=4, n_test=4)
    make_tiny_places205(roots["places205_root"])
    config = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
    config["data"].update({key: str(value) for key, value in roots.items()})
    config["evaluation"]["imagenet_linear"] = {"enabled": enabled}
    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def test_enabled_track_probes_every_trunk_model_and_feeds_the_leaderboard(workflow_copy, tmp_path):
    path, config = challenge_config(tmp_path, enabled=True)
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", str(path))
    jobs = [job for job in planned_jobs(result.stdout) if job.rule == "imagenet_linear"]
    codc_members = [f"{name}@r{experiment.get('rounds', 1)}.{member}"  # each member after its last round
                    for name, experiment in config["codc"].items() for member in experiment["members"]]
    assert sorted(job.model for job in jobs) == sorted(list(config["models"]) + codc_members)
    assert "leaderboard" in {job.rule for job in planned_jobs(result.stdout)}


def test_track_is_off_by_default(workflow_copy, tmp_path):
    path, _ = challenge_config(tmp_path, enabled=False)
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", str(path))
    assert "imagenet_linear" not in {job.rule for job in planned_jobs(result.stdout)}


def test_missing_val_folder_and_embedded_data_are_refused(workflow_copy, tmp_path):
    path, _ = challenge_config(tmp_path, enabled=True, with_val=False)
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert f"ImageNet val folder {tmp_path / 'imagenet' / 'val'} does not exist" in result.stdout + result.stderr
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    default["evaluation"]["imagenet_linear"] = {"enabled": True}
    embedded = tmp_path / "embedded.yaml"
    embedded.write_text(yaml.safe_dump(default))
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(embedded), check=False)
    assert result.returncode != 0 and "evaluation.imagenet_linear.enabled" in result.stdout + result.stderr
