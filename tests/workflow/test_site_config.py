"""config/site.yaml: a machine's data roots, published low-shot folder and conda environment, merged over the
full-scale configuration without editing a tracked file; a wrong key stops the run naming the file (dry runs in a
copy of the repository)."""
from __future__ import annotations

import yaml

from conftest import REPO, run_snakemake
from layouts_fixture import make_tiny_imagenet, make_tiny_places205, make_tiny_voc07

CHALLENGE = ["--configfile", "config/challenge.yaml"]
VOC_CLASSES = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())["data"]["voc07_classes"]


def tiny_roots(tmp_path) -> dict:
    make_tiny_imagenet(tmp_path / "imagenet", with_val=True)
    make_tiny_voc07(tmp_path / "VOCdevkit", VOC_CLASSES, n_trainval=4, n_test=4)
    make_tiny_places205(tmp_path / "places205")
    return {"imagenet_root": str(tmp_path / "imagenet"), "voc07_root": str(tmp_path / "VOCdevkit"),
            "places205_root": str(tmp_path / "places205")}


def write_site(workdir, settings: dict) -> None:
    (workdir / "config" / "site.yaml").write_text(yaml.safe_dump(settings))


def output_of(result) -> str:
    return result.stdout + result.stderr


def test_the_example_shows_every_site_key():
    from ssl_challenge.plan import site_config

    example = site_config.site_settings(REPO / "config" / "site.example.yaml")
    assert set(example) == set(site_config.SITE_KEYS)
    assert "/config/site.yaml" in (REPO / ".gitignore").read_text().splitlines()


def test_site_roots_and_published_folder_reach_the_full_scale_rules(workflow_copy, tmp_path):
    refused = run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE, check=False)
    assert refused.returncode != 0 and "/datasets/imagenet" in output_of(refused)  # the tracked roots
    write_site(workflow_copy, {"data": tiny_roots(tmp_path)})
    planned = run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE)
    assert "rule pretrain:" in planned.stdout and "prepare_data" not in planned.stdout
    assert (workflow_copy / "config" / "challenge.yaml").read_text() == \
        (REPO / "config" / "challenge.yaml").read_text()  # nothing tracked was edited
    # The published low-shot folder reaches the lowshot_samples rules' params: an empty one is refused, by name.
    empty = tmp_path / "low_shot_train"
    empty.mkdir()
    write_site(workflow_copy, {"data": tiny_roots(tmp_path / "again"),
                               "evaluation": {"voc07_lowshot": {"published_samples": str(empty)}}})
    result = run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE, check=False)
    assert result.returncode != 0
    assert (f"'evaluation.voc07_lowshot.published_samples' = '{empty}' lacks train_targets_sample1_k1.json"
            in output_of(result))  # checked before any job runs (plan.config_checks)


def test_the_command_line_config_wins_over_the_site_file(workflow_copy, tmp_path):
    write_site(workflow_copy, {"data": {**tiny_roots(tmp_path), "imagenet_root": str(tmp_path / "nowhere")}})
    refused = run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE, check=False)
    assert refused.returncode != 0 and str(tmp_path / "nowhere") in output_of(refused)
    imagenet = str(tmp_path / "imagenet")
    run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE, "--config", f"data={{'imagenet_root': '{imagenet}'}}")


def test_embedded_runs_do_not_merge_it(workflow_copy, tmp_path):
    empty = tmp_path / "low_shot_train"
    empty.mkdir()
    write_site(workflow_copy, {"evaluation": {"voc07_lowshot": {"published_samples": str(empty)}}})
    assert "rule svm_lowshot:" in run_snakemake(workflow_copy, "-n", "all_tracks").stdout


def test_a_wrong_key_or_value_stops_the_run_naming_the_site_file(workflow_copy, tmp_path):
    write_site(workflow_copy, {"data": {"imagenet_rot": "/datasets/imagenet"}})
    for args in ([], CHALLENGE):  # the keys are checked for every configuration
        result = run_snakemake(workflow_copy, "-n", "all_tracks", *args, check=False)
        assert result.returncode != 0
        assert "config/site.yaml: key 'data.imagenet_rot' is not a site setting" in output_of(result)
    write_site(workflow_copy, {"data": tiny_roots(tmp_path), "resources": {"conda_env": "tpu"}})
    result = run_snakemake(workflow_copy, "-n", "all_tracks", *CHALLENGE, check=False)
    assert result.returncode != 0
    assert "config/site.yaml (merged over the configuration)" in output_of(result)
    assert "resources.conda_env" in output_of(result) and "tpu" in output_of(result)


def conda_environments(workdir, *args) -> set[str]:
    """The environment files Snakemake resolves for the rules (`--containerize` hashes each before it needs conda,
    which this machine lacks)."""
    result = run_snakemake(workdir, "--containerize", *args, check=False)
    return {line.split()[-1].rstrip(".") for line in output_of(result).splitlines()
            if line.startswith("Hashing conda environment")}


def test_the_gpu_environment_is_chosen_by_a_config_key(workflow_copy, tmp_path):
    assert conda_environments(workflow_copy) == {"envs/pipeline.yaml", "envs/seeds_study.yaml"}
    write_site(workflow_copy, {"data": tiny_roots(tmp_path), "resources": {"conda_env": "gpu"}})
    assert conda_environments(workflow_copy, *CHALLENGE) == {"envs/pipeline-gpu.yaml", "envs/seeds_study.yaml"}
