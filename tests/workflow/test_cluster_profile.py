"""The cluster profile `slurm`: `make slurm-profile` installs it where Snakemake looks profiles up by name, and
`snakemake --profile slurm all_tracks` from the repository root then plans the full-scale configuration with the
profile's requests (a dry run; tests/slurm runs the command on a real SLURM cluster)."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from conftest import REPO
from dryrun import planned_jobs
from test_challenge_config import challenge_config_with_roots

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"


def make_slurm_profile(config_home):
    return subprocess.run(["make", "-s", "slurm-profile"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, XDG_CONFIG_HOME=str(config_home)))


def test_make_slurm_profile_installs_the_template_and_keeps_an_edited_copy(tmp_path):
    installed = tmp_path / "snakemake" / "slurm" / "config.yaml"
    assert make_slurm_profile(tmp_path).returncode == 0
    assert installed.read_text() == PROFILE.read_text()
    edited = installed.read_text().replace('# slurm_account: "my_project"', 'slurm_account: "mine"')
    installed.write_text(edited)
    again = make_slurm_profile(tmp_path)
    assert again.returncode == 0 and "kept" in again.stdout
    assert installed.read_text() == edited


def snakemake_with_profile(workdir, config_home, *args):
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), XDG_CONFIG_HOME=str(config_home))
    env.setdefault("SLURM_CONF", "/dev/null")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)


def test_profile_by_name_selects_the_full_scale_configuration(workflow_copy, tmp_path):
    assert make_slurm_profile(tmp_path / "xdg").returncode == 0
    # As shipped, config/challenge.yaml points at /datasets: the run stops before any job, naming the root.
    refused = snakemake_with_profile(workflow_copy, tmp_path / "xdg", "--profile", "slurm", "all_tracks", "-n")
    assert refused.returncode != 0
    assert "/datasets/imagenet" in refused.stdout + refused.stderr
    # With the roots pointed at data in the real layouts, the same command plans the full scale.
    (workflow_copy / "config" / "challenge.yaml").write_text(challenge_config_with_roots(tmp_path).read_text())
    planned = snakemake_with_profile(workflow_copy, tmp_path / "xdg", "--profile", "slurm", "all_tracks", "-n")
    output = planned.stdout + planned.stderr
    assert planned.returncode == 0, output[-3000:]
    assert "Using profile slurm for setting default command line arguments" in output
    jobs = planned_jobs(planned.stdout)
    assert {job.model for job in jobs if job.rule == "pretrain"} == {"random", "rot", "dc", "odc", "cls"}
    requests = yaml.safe_load(PROFILE.read_text())["set-resources"]
    assert f"gpu={requests['pretrain']['gpu']}" in output and f"mem_mb={requests['pretrain']['mem_mb']}" in output
