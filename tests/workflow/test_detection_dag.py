"""Which models get a detector (evaluation.voc07_detection.models), seen in dry runs."""
from __future__ import annotations

import re

import yaml

from conftest import REPO, run_snakemake


def detection_jobs(output: str) -> set[str]:
    jobs = re.findall(r"rule voc07_detection:.*?wildcards: model=(\S+)", output, flags=re.S)
    return set(jobs)


def smoke_with(tmp_path, models):
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    config["evaluation"]["voc07_detection"]["models"] = models
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_models_key_auto_all_list_and_a_concatenation(workflow_copy, tmp_path):
    output = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", smoke_with(tmp_path, "auto")).stdout
    assert detection_jobs(output) == {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot"}
    assert "results/submission/codc2@r1.concat/manifest.json" in output  # every row gets its submission files
    output = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile", smoke_with(tmp_path, ["rot"])).stdout
    assert detection_jobs(output) == {"rot"}
    result = run_snakemake(workflow_copy, "-n", "all_tracks", "--configfile",
                           smoke_with(tmp_path, ["rot", "codc2@r1.concat"]), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "evaluation.voc07_detection.models" in message and "'codc2@r1.concat' is a concatenation" in message
