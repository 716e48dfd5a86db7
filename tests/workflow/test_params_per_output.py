"""A rule's params are exactly what determines its output (rules/*.smk, planning.py "params per job"): after the
session's finished smoke run, adding a layer to a track makes only that layer's jobs and the tables stale, adding a
low-shot k runs that k's samples and SVM jobs and the per-layer merges (the other ks' files are left as they were),
and an option makes stale (in a dry run) only the jobs whose result it changes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_snakemake  # smoke_run, smoke_copy: the session's one finished smoke run (conftest.py)
from dryrun import planned_jobs

pytestmark = pytest.mark.slow
SMOKE_SVM_MODELS = {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot", "codc2@r1.concat", "dc@e1",
                    "odc@e1"}
SMOKE_LOWSHOT_MODELS = SMOKE_SVM_MODELS - {"dc@e1", "odc@e1"}  # snapshots: the full SVM only
TABLES = {"leaderboard", "dc_vs_odc", "ablation_tables", "submission_files", "all_tracks"}  # made from results


def edited_smoke(workdir: Path, tmp_path: Path, edit) -> Path:
    config = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    edit(config)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def planned(workdir: Path, config: Path):
    return planned_jobs(run_snakemake(workdir, "-n", "all_tracks", "--configfile", str(config)).stdout)


def layer(job) -> str:
    return dict(job.wildcards)["layer"]


def test_adding_an_svm_layer_runs_only_that_layers_jobs_and_the_tables(smoke_copy, tmp_path):
    config = edited_smoke(smoke_copy, tmp_path, lambda c: c["evaluation"]["voc07_svm"]["layers"].append("feat4"))
    jobs = planned(smoke_copy, config)
    svm_jobs = [job for job in jobs if job.rule == "svm_full"]
    assert {job.rule for job in jobs} == {"svm_full"} | TABLES
    assert {layer(job) for job in svm_jobs} == {"feat4"} and {job.model for job in svm_jobs} == SMOKE_SVM_MODELS
    existing = sorted((smoke_copy / "results" / "eval").glob("*/voc07_svm/feat5.json"))
    assert {path.parent.parent.name for path in existing} == SMOKE_SVM_MODELS
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in existing}
    leaderboard = smoke_copy / "results" / "tables" / "leaderboard.csv"
    old_leaderboard = leaderboard.stat().st_mtime_ns

    run_snakemake(smoke_copy, "--cores", "2", "all_tracks", "--configfile", str(config))
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in existing} == before
    for model in SMOKE_SVM_MODELS:
        result = json.loads((smoke_copy / "results" / "eval" / model / "voc07_svm" / "feat4.json").read_text())
        assert result["layer"] == "feat4" and 0 <= result["map"] <= 100
    assert leaderboard.stat().st_mtime_ns > old_leaderboard
    assert planned(smoke_copy, config) == []


def test_adding_a_lowshot_k_runs_only_that_ks_jobs_and_the_merges(smoke_copy, tmp_path):
    config = edited_smoke(smoke_copy, tmp_path, lambda c: c["evaluation"]["voc07_lowshot"]["k_values"].append(4))
    jobs = planned(smoke_copy, config)
    assert {job.rule for job in jobs} == {"lowshot_samples", "svm_lowshot", "merge_lowshot", "leaderboard",
                                          "dc_vs_odc", "submission_files", "all_tracks"}
    per_k_jobs = [job for job in jobs if job.rule in ("lowshot_samples", "svm_lowshot")]
    assert {dict(job.wildcards)["k"] for job in per_k_jobs} == {"4"}  # the drawn ks' samples and SVMs stay
    assert {job.model for job in per_k_jobs if job.rule == "svm_lowshot"} == SMOKE_LOWSHOT_MODELS
    assert {job.model for job in jobs if job.rule == "merge_lowshot"} == SMOKE_LOWSHOT_MODELS
    eval_dir = smoke_copy / "results" / "eval"
    existing = sorted(eval_dir.glob("voc07_lowshot_samples/k*.json")) + sorted(eval_dir.glob("*/voc07_lowshot/*/k*"))
    assert len(existing) == 2 + 2 * 2 * len(SMOKE_LOWSHOT_MODELS)  # k 1, 2: samples, and result + scores per model
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in existing}
    old = {model: json.loads((eval_dir / model / "voc07_lowshot" / "feat5.json").read_text())
           for model in SMOKE_LOWSHOT_MODELS}

    run_snakemake(smoke_copy, "--cores", "2", "all_tracks", "--configfile", str(config))
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in existing} == before
    for model in SMOKE_LOWSHOT_MODELS:
        merged = json.loads((eval_dir / model / "voc07_lowshot" / "feat5.json").read_text())
        assert list(merged["per_k"]) == ["1", "2", "4"]
        assert {k: merged["per_k"][k] for k in ("1", "2")} == old[model]["per_k"]
        assert merged["track_score"] == pytest.approx(sum(entry["mean"] for entry in merged["per_k"].values()) / 3)
        with np.load(eval_dir / model / "voc07_lowshot" / "feat5.scores.npz") as scores:
            assert {"k4_sample1", "k4_sample2", "k1_sample1"} <= set(scores.files)
    assert planned(smoke_copy, config) == []


def test_published_samples_reach_the_samples_job(smoke_copy, tmp_path):
    """evaluation.voc07_lowshot.published_samples: each k's job reads that k's files (here the drawn samples
    written in the benchmark's encoding, so the samples read back are the drawn ones)."""
    from ssl_challenge.data.voc07 import read_image_set, voc07_class_names
    from ssl_challenge.evaluation.lowshot import published_sample_path

    voc_root = smoke_copy / "results" / "data" / "embedded" / "VOCdevkit"
    ids, classes = read_image_set(voc_root, "trainval"), voc07_class_names(voc_root)
    folder, drawn = tmp_path / "low_shot_train", {}
    folder.mkdir()
    for k in (1, 2):
        drawn[k] = json.loads((smoke_copy / "results" / "eval" / "voc07_lowshot_samples" / f"k{k}.json").read_text())
        for sample, draw in enumerate(drawn[k]["samples"][str(k)], start=1):
            targets = {image_id: {name: -1 for name in classes} for image_id in ids}
            for c, name in enumerate(classes):
                for label, part in ((1, "positives"), (0, "negatives")):
                    for row in draw[part][c]:
                        targets[ids[row]][name] = label
            published_sample_path(folder, sample, k).write_text(json.dumps(targets))
    config = edited_smoke(smoke_copy, tmp_path,
                          lambda c: c["evaluation"]["voc07_lowshot"].update(published_samples=str(folder)))
    assert {(job.rule, dict(job.wildcards)["k"]) for job in planned(smoke_copy, config)
            if job.rule == "lowshot_samples"} == {("lowshot_samples", "1"), ("lowshot_samples", "2")}
    run_snakemake(smoke_copy, "--cores", "1", "results/eval/voc07_lowshot_samples/k1.json", "--configfile",
                  str(config))
    read = json.loads((smoke_copy / "results" / "eval" / "voc07_lowshot_samples" / "k1.json").read_text())
    assert read["seed"] is None and str(folder) in read["source"]
    assert read["samples"] == drawn[1]["samples"]


@pytest.mark.parametrize("edit, rules, check", [
    # a low-shot layer: that layer's low-shot jobs (not the samples, not the full SVM)
    (lambda c: c["evaluation"]["voc07_lowshot"]["layers"].append("feat4"), {"svm_lowshot", "merge_lowshot",
                                                                             "leaderboard", "dc_vs_odc",
                                                                             "submission_files", "all_tracks"},
     lambda jobs: {layer(job) for job in jobs if job.rule == "svm_lowshot"} == {"feat4"}),
    # the low-shot costs: the low-shot SVMs, not the samples
    (lambda c: c["evaluation"]["voc07_lowshot"].update(costs=[1.0, 10.0]), {"svm_lowshot", "merge_lowshot",
                                                                            "leaderboard", "dc_vs_odc",
                                                                            "submission_files", "all_tracks"},
     lambda jobs: len([job for job in jobs if job.rule == "svm_lowshot"]) == 8 * 2),  # 8 models x 2 ks
    # a probe option: the probes, not the features
    (lambda c: c["evaluation"]["places205_linear"].update(epochs=3), {"linear_probe", "leaderboard",
                                                                              "submission_files", "all_tracks"},
     lambda jobs: len([job for job in jobs if job.rule == "linear_probe"]) == 8),
    # the extraction batch: every feature file, and no online probe (the concatenation's runs its members' trunks)
    (lambda c: c["features"].update(batch_size=128), {"extract_voc07_features", "concat_voc07_features",
                                                      "svm_full", "svm_lowshot", "merge_lowshot"} | TABLES,
     lambda jobs: {job.model for job in jobs if job.rule == "concat_voc07_features"} == {"codc2@r1.concat"}),
])
def test_an_option_marks_stale_only_the_jobs_whose_result_it_changes(smoke_run, tmp_path, edit, rules,
                                                                    check):
    workdir, _ = smoke_run
    jobs = planned(workdir, edited_smoke(workdir, tmp_path, edit))
    assert {job.rule for job in jobs} == rules
    assert check(jobs)
