"""End to end: the smoke config through every stage in a scratch copy, then what a dry run says is stale."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import run_snakemake  # noqa: E402  (smoke_run: the session's one smoke run, conftest.py)
from dryrun import planned_jobs  # noqa: E402

pytestmark = pytest.mark.slow
SMOKE = ["--configfile", "config/smoke.yaml"]


def test_smoke_run_fills_the_leaderboard(smoke_run):
    workdir, elapsed = smoke_run
    table = pd.read_csv(workdir / "results" / "tables" / "leaderboard.csv")
    measured = table[table["section"] == "measured"].set_index("model")
    assert set(measured.index) == {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot",
                                   "codc2@r1.concat"}
    for track in ("voc07_svm", "voc07_lowshot", "places205_linear"):
        assert measured[track].between(0, 100).all(), track
        assert measured[f"{track}_layer"].str.match(r"feat[1-5]").all()
    published = table[table["section"] == "published"]
    assert "ODC" in set(published["model"])
    assert (workdir / "results" / "plots" / "lowshot.png").stat().st_size > 1000
    times = pd.read_csv(workdir / "results" / "tables" / "stage_times.csv")
    assert {"pretrain", "features", "voc07_svm", "voc07_lowshot", "places205_linear"} <= set(times["stage"])
    # A hang guard, not a speed target (those live in benchmarks/): three times the slowest run seen, about 500 s
    # while three other pipelines shared the 2 cores (a load of 8); about 200 s idle on 2 cores with deterministic
    # CPU numerics when their training steps took about 2.4x the CPU time of oneDNN's (docs/reproducibility.md).
    assert elapsed < 3 * 500, f"smoke run took {elapsed:.0f} s, three times the slowest seen (about 500 s)"


def test_smoke_run_writes_the_ablation_and_dc_vs_odc_tables(smoke_run):
    workdir, _ = smoke_run
    tables = workdir / "results" / "tables"
    ablation = pd.read_csv(tables / "codc_ablation.csv")
    measured = ablation[ablation["section"] == "measured"].set_index("stage")
    assert list(measured.index) == ["before CODC", "after CODC", "concatenate"]
    assert measured.loc["after CODC", ["codc2: dc", "codc2: rot"]].between(0, 100).all()
    assert "published" in set(ablation["section"])
    dc_vs_odc = pd.read_csv(tables / "dc_vs_odc.csv")
    assert set(dc_vs_odc["method"]) == {"dc", "odc"}
    assert (dc_vs_odc["pretrain_seconds"] > 0).all()
    assert (workdir / "results" / "plots" / "dc_vs_odc.png").stat().st_size > 1000
    labels = np.load(workdir / "results" / "codc" / "codc2" / "r1" / "dc.labels.npz")
    assert json.loads(str(labels["metadata"]))["models"] == ["rot"]  # dc's round-1 labels come from its peer


def test_second_run_has_nothing_to_do(smoke_run, tmp_path):
    workdir, _ = smoke_run
    result = run_snakemake(workdir, "-n", "all_tracks", *SMOKE)
    assert planned_jobs(result.stdout + result.stderr) == []
    # Nor after reordering the keys of the config file (params are compared with sorted keys); only the order of
    # the models themselves counts (it is the leaderboard's row order).
    def reversed_keys(value):
        if isinstance(value, dict):
            return {key: reversed_keys(value[key]) for key in reversed(list(value))}
        return value

    config = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    config = {section: ({name: reversed_keys(entry) for name, entry in value.items()}
                        if section in ("models", "codc") else reversed_keys(value))
              for section, value in reversed(list(config.items()))}
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_snakemake(workdir, "-n", "all_tracks", "--configfile", str(reordered))
    assert planned_jobs(result.stdout + result.stderr) == []


def trained_models(jobs) -> set[str]:
    """The models a dry run would (re)train: pretraining jobs and CODC rounds."""
    names = {job.model for job in jobs if job.rule == "pretrain"}
    for job in jobs:
        if job.rule == "codc_round":
            wildcards = dict(job.wildcards)
            names.add(f"{wildcards['experiment']}@r{wildcards['round']}.{wildcards['member']}")
    return names


def test_changing_one_model_marks_exactly_its_stages(smoke_run, tmp_path):
    workdir, _ = smoke_run
    smoke = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    smoke["models"]["odc"]["optimizer"]["lr"] = 0.04
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(smoke, sort_keys=False))
    jobs = planned_jobs(run_snakemake(workdir, "-n", "all_tracks", "--configfile", str(changed)).stdout)
    assert {job.model for job in jobs if job.model} == {"odc", "odc@e1"}
    assert {job.rule for job in jobs} == {"pretrain", "snapshot_model", "extract_voc07_features", "svm_full",
                                          "svm_lowshot", "merge_lowshot", "linear_probe", "voc07_detection",
                                          "submission_files", "leaderboard", "dc_vs_odc", "all_tracks"}
    pretrain = next(job for job in jobs if job.rule == "pretrain")
    assert "params" in pretrain.reason.lower()


def test_a_rot_change_reaches_the_codc_rounds_that_use_rot(smoke_run, tmp_path):
    workdir, _ = smoke_run
    smoke = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    smoke["models"]["rot"]["optimizer"]["lr"] = 0.04
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(smoke, sort_keys=False))
    jobs = planned_jobs(run_snakemake(workdir, "-n", "all_tracks", "--configfile", str(changed)).stdout)
    # rot is a member of codc2 and dc's peer (dc's round-1 labels come from rot); CLS clusters codc2's result.
    assert trained_models(jobs) == {"rot", "codc2@r1.rot", "codc2@r1.dc", "cls"}
    assert not [job for job in jobs if job.rule == "pretrain" and job.model in ("dc", "odc", "random")]


def dry_run_after_editing(workdir: Path, module: str) -> str:
    """What `snakemake -n` says after a code edit of a library module (undone afterwards)."""
    path = workdir / "src" / "ssl_challenge" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n_EDITED_CODE = 1  # a code edit (a comment alone leaves the digest as it is)\n")
        return run_snakemake(workdir, "-n", "all_tracks", *SMOKE).stdout
    finally:
        path.write_text(original)


def test_editing_the_odc_module_marks_only_odc_stages_and_names_the_reason(smoke_run):
    workdir, _ = smoke_run
    output = dry_run_after_editing(workdir, "methods/odc.py")
    jobs = planned_jobs(output)
    assert {job.model for job in jobs if job.model} == {"odc", "odc@e1"}  # ROT, DC, CLS and CODC stay up to date
    pretrain = next(job for job in jobs if job.rule == "pretrain")
    assert pretrain.model == "odc"
    assert "params have changed" in pretrain.reason.lower()
    assert "code digest" in output  # the changed param says what it is: the digest of the code the rule runs


def test_editing_the_online_clustering_module_marks_odc_and_every_codc_round(smoke_run):
    workdir, _ = smoke_run
    jobs = planned_jobs(dry_run_after_editing(workdir, "methods/online_clustering.py"))
    assert trained_models(jobs) == {"odc", "codc2@r1.dc", "codc2@r1.rot", "cls"}
