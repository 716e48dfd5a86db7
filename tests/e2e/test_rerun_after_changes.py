"""After the session's one finished smoke run, each test changes code, data or asks for a forced rerun in its own
copy and checks that the rerun really runs what changed (and fails when the code now fails): a result is never
stale nor silently copied from an earlier run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import SMOKE_CONFIG, run_snakemake  # noqa: E402  (smoke_copy: a copy of the session's smoke run)
from dryrun import planned_jobs  # noqa: E402

pytestmark = pytest.mark.slow
ROT_MODEL = "results/models/rot/model.pth"


def backbone(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["backbone"]


def new_log_text(path: Path, before: str) -> str:
    """What a job added to its log (the log may have been appended to or rewritten)."""
    text = path.read_text()
    return text[len(before):] if text.startswith(before) else text


def insert_after(path: Path, anchor: str, line: str) -> None:
    """Insert ``line`` after the line holding ``anchor``, indented like the line following it."""
    lines = path.read_text().splitlines(keepends=True)
    index = next(i for i, text in enumerate(lines) if anchor in text)
    indent = lines[index + 1][: len(lines[index + 1]) - len(lines[index + 1].lstrip())]
    lines.insert(index + 1, f"{indent}{line}\n")
    path.write_text("".join(lines))


def test_a_training_step_that_now_raises_fails_the_rerun(smoke_copy):
    insert_after(smoke_copy / "src/ssl_challenge/methods/rotation.py", "def training_step",
                 'raise RuntimeError("edited")')
    result = run_snakemake(smoke_copy, "--cores", "1", ROT_MODEL, *SMOKE_CONFIG, check=False)
    assert result.returncode != 0
    log = (smoke_copy / "results/logs/pretrain/rot.log").read_text()
    assert 'RuntimeError("edited")' in log or "RuntimeError: edited" in log
    assert "nothing to do" not in log


def test_changed_pretraining_data_retrains_on_the_new_data(smoke_copy, tmp_path):
    before = backbone(smoke_copy / ROT_MODEL)
    config = yaml.safe_load((smoke_copy / "config/smoke.yaml").read_text())
    config["data"]["embedded"]["seed"] = 1  # another selection of pretraining images
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(run_snakemake(smoke_copy, "-n", ROT_MODEL, "--configfile", str(changed)).stdout)
    assert {job.rule for job in jobs} == {"prepare_data", "pretrain"}
    run_snakemake(smoke_copy, "--cores", "2", ROT_MODEL, "--configfile", str(changed))
    after = backbone(smoke_copy / ROT_MODEL)
    assert any(not torch.equal(before[key], after[key]) for key in before)
    assert len(list((smoke_copy / "results/models/rot/runs").iterdir())) == 2  # a new run folder, a new identity


def test_editing_the_svm_track_reruns_the_svm_jobs_only(smoke_copy):
    insert_after(smoke_copy / "src/ssl_challenge/stages/svm_track.py", "costs = protocol_costs(",
                 'log.info("the edited svm track ran")')
    jobs = planned_jobs(run_snakemake(smoke_copy, "-n", "all_tracks", *SMOKE_CONFIG).stdout)
    svm_jobs = [job for job in jobs if job.rule == "svm_full"]
    assert {job.model for job in svm_jobs} == {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot",
                                               "codc2@r1.concat", "dc@e1", "odc@e1"}
    assert all("params" in job.reason.lower() for job in svm_jobs)
    assert {job.rule for job in jobs} <= {"svm_full", "leaderboard", "dc_vs_odc", "ablation_tables", "submission_files",
                                         "all_tracks"}
    result = smoke_copy / "results/eval/rot/voc07_svm/feat5.json"
    log = smoke_copy / "results/logs/voc07_svm/rot/feat5.log"
    old_log = log.read_text()
    run_snakemake(smoke_copy, "--cores", "1", str(result.relative_to(smoke_copy)), *SMOKE_CONFIG)
    assert "the edited svm track ran" in new_log_text(log, old_log)


def test_forcerun_pretrain_trains_again(smoke_copy):
    log = smoke_copy / "results/logs/pretrain/rot.log"
    old_log = log.read_text()
    model = smoke_copy / ROT_MODEL
    old_time = model.stat().st_mtime_ns
    run_snakemake(smoke_copy, "--cores", "1", ROT_MODEL, "--forcerun", "pretrain", *SMOKE_CONFIG)
    added = new_log_text(log, old_log)
    assert "training again from scratch" in added and "epoch 1/1:" in added
    assert "nothing to do" not in added
    assert model.stat().st_mtime_ns > old_time


def test_a_documentation_edit_of_a_foundation_module_leaves_the_finished_run_up_to_date(smoke_run):
    """On a real finished run (dry runs only, in place, the edit undone): comments and docstrings of core/io.py,
    which every stage imports, mark nothing stale; a code edit there marks every job that runs a script."""
    from test_comment_edits import FOUNDATION_MODULE, NOTHING_TO_DO, documentation_edited

    workdir = smoke_run[0]
    module = workdir / FOUNDATION_MODULE
    original = module.read_text()
    try:
        module.write_text(documentation_edited(original))
        assert NOTHING_TO_DO in run_snakemake(workdir, "-n", "all_tracks", *SMOKE_CONFIG).stdout
        module.write_text(original + "\nEDITED_CODE = 1\n")
        jobs = planned_jobs(run_snakemake(workdir, "-n", "all_tracks", *SMOKE_CONFIG).stdout)
        assert "params" in next(job for job in jobs if job.rule == "prepare_data").reason.lower()
        assert {"pretrain", "svm_full", "leaderboard"} <= {job.rule for job in jobs}
    finally:
        module.write_text(original)
