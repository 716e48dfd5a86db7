"""The CODC part of the DAG, read from dry runs: where a round's labels and weights come from."""
from __future__ import annotations

import re

import yaml

from conftest import REPO, run_snakemake


def job_inputs(dry_run_output: str) -> dict[str, list[str]]:
    """Output file -> input files of every job of a dry run."""
    jobs = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:)", dry_run_output, flags=re.MULTILINE):
        inputs = re.search(r"^\s*input: (.*)$", block, flags=re.MULTILINE)
        outputs = re.search(r"^\s*output: (.*)$", block, flags=re.MULTILINE)
        if outputs:
            for output in outputs.group(1).split(", "):
                jobs[output] = inputs.group(1).split(", ") if inputs else []
    return jobs


def dry_run(workflow_copy, tmp_path, edit) -> dict[str, list[str]]:
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", str(path))
    return job_inputs(result.stdout)


def two_rounds(config):
    config["codc"]["codc2"]["rounds"] = 2
    config["models"]["cls"]["method_options"]["label_models"] = ["codc2@r2.dc", "codc2@r2.rot"]


def test_a_round_starts_from_the_previous_rounds_weights_and_its_peers_labels(workflow_copy, tmp_path):
    jobs = dry_run(workflow_copy, tmp_path, two_rounds)
    round2_dc = set(jobs["results/models/codc2@r2.dc/model.pth"])
    assert {"results/models/codc2@r1.dc/model.pth", "results/codc/codc2/r2/dc.labels.npz"} <= round2_dc
    # dc's round-2 labels: k-means of its peer's (rot's) round-1 features; round 1 starts from the pretrained rot.
    assert "results/models/codc2@r1.rot/model.pth" in jobs["results/codc/codc2/r2/dc.labels.npz"]
    assert "results/models/codc2@r1.dc/model.pth" not in jobs["results/codc/codc2/r2/dc.labels.npz"]
    assert "results/models/rot/model.pth" in jobs["results/codc/codc2/r1/dc.labels.npz"]
    assert "results/models/dc/model.pth" in jobs["results/models/codc2@r1.dc/model.pth"]
    # The leaderboard row of a member is its last round; the concatenation joins the last round's members.
    assert "results/features/codc2@r2.concat/voc07_test.npz" in jobs
    assert set(jobs["results/features/codc2@r2.concat/voc07_test.npz"]) == {
        f"results/features/codc2@r2.{member}/voc07_{subset}.npz" for member in ("dc", "rot")
        for subset in ("trainval", "test")}


def test_the_self_control_clusters_each_members_own_features(workflow_copy, tmp_path):
    def self_labelled(config):
        config["codc"]["codc2"]["label_source"] = "self"

    jobs = dry_run(workflow_copy, tmp_path, self_labelled)
    labels = jobs["results/codc/codc2/r1/dc.labels.npz"]
    assert "results/models/dc/model.pth" in labels and "results/models/rot/model.pth" not in labels


def test_a_later_experiment_starts_its_shared_members_from_the_earlier_ones_result(workflow_copy, tmp_path):
    def three_models(config):
        config["codc"]["codc3"] = {**config["codc"]["codc2"], "members": ["dc", "rot", "cls"],
                                   "start_from": "codc2"}

    jobs = dry_run(workflow_copy, tmp_path, three_models)
    assert "results/models/codc2@r1.dc/model.pth" in jobs["results/models/codc3@r1.dc/model.pth"]
    assert "results/models/cls/model.pth" in jobs["results/models/codc3@r1.cls/model.pth"]
    cls_labels = jobs["results/codc/codc3/r1/cls.labels.npz"]
    assert {"results/models/codc2@r1.dc/model.pth", "results/models/codc2@r1.rot/model.pth"} <= set(cls_labels)
    # CLS itself trains on the clusters of codc2's result.
    assert set(jobs["results/labels/cls.npz"]) >= {"results/models/codc2@r1.dc/model.pth",
                                                   "results/models/codc2@r1.rot/model.pth"}
