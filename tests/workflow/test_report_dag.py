"""Dry runs of the report and seeds-study targets: what they plan, and that all_tracks plans neither."""
from __future__ import annotations

from conftest import run_snakemake
from dryrun import planned_jobs

SMOKE = ["--configfile", "config/smoke.yaml"]


def test_report_items_plan_a_training_curve_per_trained_model_and_the_table_pages(workflow_copy):
    jobs = planned_jobs(run_snakemake(workflow_copy, "-n", "report_items", *SMOKE).stdout)
    curves = {job.model for job in jobs if job.rule == "training_curves"}
    assert curves == {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot"}
    rules = {job.rule for job in jobs}
    assert {"leaderboard_page", "codc_ablation_page", "dc_vs_odc_page", "leaderboard", "ablation_tables"} <= rules
    tracks = planned_jobs(run_snakemake(workflow_copy, "-n", "all_tracks", *SMOKE).stdout)
    assert not {job.rule for job in tracks} & {"training_curves", "leaderboard_page", "seed_run", "seeds_study"}


def test_seeds_study_plans_one_workflow_run_per_seed(workflow_copy):
    jobs = planned_jobs(run_snakemake(workflow_copy, "-n", "-p", "seeds_study").stdout)
    assert sorted(dict(job.wildcards)["seed"] for job in jobs if job.rule == "seed_run") == ["0", "1", "2"]
    output = run_snakemake(workflow_copy, "-n", "-p", "seeds_study").stdout
    assert "--directory results/seeds/seed1" in output and "all_tracks" in output
