"""End to end: the smoke config through every stage in a scratch copy, then what a dry run says is stale."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import copy_workflow, run_snakemake  # noqa: E402
from dryrun import planned_jobs  # noqa: E402

pytestmark = pytest.mark.slow
SMOKE = ["--configfile", "config/smoke.yaml"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("smoke") / "workflow")
    started = time.monotonic()
    run_snakemake(workdir, "--cores", "2", "all_tracks", *SMOKE, timeout=900)
    return workdir, time.monotonic() - started


def test_smoke_run_fills_the_leaderboard(smoke_run):
    workdir, elapsed = smoke_run
    table = pd.read_csv(workdir / "results" / "tables" / "leaderboard.csv")
    measured = table[table["section"] == "measured"].set_index("model")
    assert set(measured.index) == {"random", "rot"}
    for track in ("voc07_svm", "voc07_lowshot", "places205_linear"):
        assert measured[track].between(0, 100).all(), track
        assert measured[f"{track}_layer"].str.match(r"feat[1-5]").all()
    published = table[table["section"] == "published"]
    assert "ODC" in set(published["model"])
    assert (workdir / "results" / "plots" / "lowshot.png").stat().st_size > 1000
    times = pd.read_csv(workdir / "results" / "tables" / "stage_times.csv")
    assert {"pretrain", "features", "voc07_svm", "voc07_lowshot", "places205_linear"} <= set(times["stage"])
    assert elapsed < 180, f"smoke run took {elapsed:.0f} s"


def test_second_run_has_nothing_to_do(smoke_run):
    workdir, _ = smoke_run
    result = run_snakemake(workdir, "-n", "all_tracks", *SMOKE)
    assert planned_jobs(result.stdout + result.stderr) == []


def test_changing_one_model_marks_exactly_its_stages(smoke_run, tmp_path):
    workdir, _ = smoke_run
    smoke = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    smoke["models"]["rot"]["optimizer"]["lr"] = 0.04
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(smoke))
    jobs = planned_jobs(run_snakemake(workdir, "-n", "all_tracks", "--configfile", str(changed)).stdout)
    models = {job.model for job in jobs if job.model}
    assert models == {"rot"}
    assert {job.rule for job in jobs} >= {"pretrain", "extract_features", "svm_full", "svm_lowshot", "linear_probe",
                                          "leaderboard"}
    pretrain = next(job for job in jobs if job.rule == "pretrain")
    assert "params" in pretrain.reason.lower()


def test_editing_a_method_module_marks_its_stages_and_names_the_reason(smoke_run):
    workdir, _ = smoke_run
    module = workdir / "src" / "ssl_challenge" / "methods" / "rotation.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit that changes the code digest\n")
        jobs = planned_jobs(run_snakemake(workdir, "-n", "all_tracks", *SMOKE).stdout)
    finally:
        module.write_text(original)
    assert {job.model for job in jobs if job.model} == {"rot"}
    pretrain = next(job for job in jobs if job.rule == "pretrain")
    assert "params" in pretrain.reason.lower()
