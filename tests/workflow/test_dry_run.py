"""Dry runs: the DAG of all_tracks, config validation before any job, and the cost of building the DAG."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO, run_snakemake


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def write_config(path: Path, overrides: dict) -> Path:
    """The default config with ``overrides`` (a --configfile replaces config/config.yaml, so it is complete)."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    path.write_text(yaml.safe_dump(deep_merge(default, overrides)))
    return path


def test_dry_run_lists_every_stage(workflow_copy):
    # Its speed is not asserted here: a wall-clock bound fails on a loaded machine (2.6 s idle, 15 s at load 10).
    result = run_snakemake(workflow_copy, "-n", "all_tracks")
    output = result.stdout + result.stderr
    for rule in ("prepare_data", "pretrain", "snapshot_model", "pseudo_labels", "codc_labels", "codc_round",
                 "extract_voc07_features", "extract_places205_features", "concat_voc07_features",
                 "concat_places205_features", "svm_full", "lowshot_samples", "svm_lowshot", "merge_lowshot",
                 "linear_probe", "leaderboard", "dc_vs_odc", "ablation_tables", "all_tracks"):
        assert rule in output, f"rule {rule} missing from the dry run"


def test_dag_building_never_imports_torch(workflow_copy):
    env = dict(os.environ, PYTHONPATH=str(workflow_copy / "src"))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "all_tracks"],
                            cwd=workflow_copy, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "ssl_challenge.data.layouts" in imported  # the check ran in this process
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


def test_unknown_config_key_fails_before_any_job(workflow_copy, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"features": {"layerz": ["feat5"]}})
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "layerz" in result.stdout + result.stderr


def test_wrong_type_names_the_key(workflow_copy, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"evaluation": {"voc07_svm": {"costs": "ten"}}})
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "costs" in result.stdout + result.stderr


def test_missing_fashion_mnist_is_reported_with_its_key(workflow_copy, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"data": {"embedded": {"fashion_mnist_dir": str(tmp_path / "x")}}})
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "data.embedded.fashion_mnist_dir" in result.stdout + result.stderr


def test_a_configfile_replaces_the_default_instead_of_extending_it(workflow_copy, tmp_path):
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    del config["models"]["odc"]
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile",
                           str(write_config_as_is(tmp_path / "smoke.yaml", config)))
    output = result.stdout + result.stderr
    assert "model=dc" in output and "model=odc" not in output  # odc is in config/config.yaml, not in this file
    assert "codc3" not in output


def write_config_as_is(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_codc_member_names_that_are_not_models_are_refused(workflow_copy, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"codc": {"codc2": {"members": ["dc", "rotation"]}}})
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "codc.codc2.members" in result.stdout + result.stderr and "rotation" in result.stdout + result.stderr


def test_an_ablation_control_must_be_a_self_labelled_experiment(workflow_copy, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"ablation": {"controls": {"codc2": "codc3"}}})
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "ablation.controls.codc2" in result.stdout + result.stderr
