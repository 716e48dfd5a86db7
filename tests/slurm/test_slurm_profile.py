"""profiles/slurm on a real one-node SLURM cluster (tools/slurm/start.sh): every job goes through sbatch with
the resources its rule asks for. Skipped, with the reason, where no cluster can be started (not root, no
apt-get).

The cluster has no accounting database, so what each job asked for is read from `scontrol show job` (the
cluster keeps finished jobs for an hour) and compared with what a dry run under the same profile says each job
needs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE, copy_workflow

pytestmark = pytest.mark.slurm

TOOLS = REPO / "tools" / "slurm"
MINI_WORKFLOW = Path(__file__).resolve().parent / "mini" / "Snakefile"
SMOKE = ["--configfile", "config/smoke.yaml"]
# Memory asked by every job on the test cluster: small enough for several jobs to share the node.
TEST_MEM_MB = 1000


# ---------------------------------------------------------------- the cluster
def sbin_environment() -> dict[str, str]:
    """The environment of the daemons and client commands: sbin on PATH, no SLURM_CONF override (the cluster's
    configuration is at the default path, and `make` may point SLURM_CONF at /dev/null for local runs)."""
    env = {key: value for key, value in os.environ.items() if key != "SLURM_CONF"}
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
    return env


def run_tool(script: str, timeout: int) -> subprocess.CompletedProcess:
    """Runs tools/slurm/<script>; a time-out is a failure (exit status 124) like any other."""
    command = [str(TOOLS / script)]
    try:
        return subprocess.run(command, env=sbin_environment(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"{script} did not finish within {timeout} s")


def tail(result: subprocess.CompletedProcess, lines: int = 15) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running local cluster: installs SLURM where it can (root with apt-get), starts it, stops it after the
    module's tests (unless it was already running before them)."""
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if shutil.which("slurmctld", path=sbin_environment()["PATH"]) is None:
        if not (is_root and shutil.which("apt-get")):
            pytest.skip("SLURM is not installed and cannot be installed here (needs root and apt-get): "
                        "run `sudo tools/slurm/install.sh`")
        installed = run_tool("install.sh", timeout=900)
        if installed.returncode != 0:
            pytest.skip(f"tools/slurm/install.sh failed:\n{tail(installed)}")
    if not is_root:
        pytest.skip("starting the local SLURM cluster needs root (daemons, device nodes, /etc/slurm)")
    started = run_tool("start.sh", timeout=180)
    if started.returncode != 0:
        pytest.skip(f"tools/slurm/start.sh could not start a local SLURM cluster:\n{tail(started)}")
    started_here = "already running" not in started.stdout
    try:
        cpus, memory_mb = subprocess.run(
            ["sinfo", "--noheader", "--format=%c %m"], env=sbin_environment(), capture_output=True, text=True,
            check=True,
        ).stdout.split()[:2]
        yield {"cpus": int(cpus), "memory_mb": int(memory_mb.rstrip("+"))}
    finally:
        if started_here:
            run_tool("stop.sh", timeout=60)


# ---------------------------------------------------------------- the profile, scaled to the test cluster
def scaled_resources(resources: dict, cpus: int) -> dict:
    """A rule's resources on the one-node cluster: CPUs capped at the node's, memory at TEST_MEM_MB; GPUs,
    runtimes and expressions (`threads`, `1440 * attempt`) as the profile says. Threads are capped too."""
    scaled = dict(resources)
    if isinstance(scaled.get("cpus_per_task"), int):
        scaled["cpus_per_task"] = min(scaled["cpus_per_task"], cpus)
    if "mem_mb" in scaled:
        scaled["mem_mb"] = TEST_MEM_MB
    return scaled


def write_test_profile(target: Path, cpus: int) -> Path:
    """profiles/slurm scaled to the test cluster (see scaled_resources) with at most `cpus` per job, status
    checks every second and no retries."""
    settings = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    settings["default-resources"] = scaled_resources(settings["default-resources"], cpus)
    settings["set-resources"] = {
        rule: scaled_resources(resources, cpus) for rule, resources in settings["set-resources"].items()
    }
    settings["set-threads"] = {rule: min(threads, cpus) for rule, threads in settings["set-threads"].items()}
    settings.update({
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "max-status-checks-per-second": 10,
        "latency-wait": 5,
        "retries": 0,
        "keep-going": False,
    })
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return target


def dry_run(workdir: Path, profile: Path, *args: str) -> str:
    """A dry run under the profile. A dry run caps threads at --cores (1 unless given) where a SLURM run does
    not, so it gets many: `cpus_per_task: threads` must read the rule's threads as in the real run."""
    return run_snakemake(workdir, "--profile", str(profile), "--dry-run", "--cores", "1024", *args)


def run_snakemake(workdir: Path, *args: str, timeout: int = 900) -> str:
    env = dict(sbin_environment(), PYTHONPATH=str(workdir / "src"))
    result = subprocess.run(SNAKEMAKE + list(args), cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{output[-6000:]}")
    return output


# ---------------------------------------------------------------- what was asked, what SLURM got
def planned_requests(dry_run_output: str) -> dict[str, dict[str, str]]:
    """Resources of each job of a dry run, keyed by the comment the plugin gives its sbatch call
    (`rule_<rule>` or `rule_<rule>_wildcards_<values joined by _>`). Local rules and target rules without
    outputs (which Snakemake runs itself) are left out."""
    requests = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:)", dry_run_output, flags=re.MULTILINE):
        header = re.match(r"rule (\w+):", block)
        if not header or not re.search(r"^\s*output: ", block, flags=re.MULTILINE):
            continue
        comment = f"rule_{header.group(1)}"
        wildcards = re.search(r"^\s*wildcards: (.*)$", block, flags=re.MULTILINE)
        if wildcards:
            values = [item.split("=", 1)[1] for item in wildcards.group(1).split(", ")]
            comment += "_wildcards_" + "_".join(values).replace("/", "_")
        resources = re.search(r"^\s*resources: (.*)$", block, flags=re.MULTILINE)
        assert resources, f"no resources line in the dry run for {comment}"
        requests[comment] = dict(item.split("=", 1) for item in resources.group(1).split(", "))
    return requests


def slurm_jobs(run_id: str) -> dict[str, dict[str, str]]:
    """`scontrol show job` records of one Snakemake run (its jobs are named after the run ID), by comment."""
    shown = subprocess.run(["scontrol", "--oneliner", "show", "job"], env=sbin_environment(),
                           capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in shown.splitlines():
        record = dict(re.findall(r"(\S+?)=(\S*)", line))
        if record.get("JobName") == run_id:
            jobs[record["Comment"]] = record
    return jobs


def slurm_minutes(limit: str) -> int:
    """SLURM's [D-]HH:MM:SS as minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, _seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes


def submitted_requests(requests: dict, run_output: str) -> dict:
    """The planned jobs less those of rules the run executed itself (`localrule NAME:`; a dry run does not
    tell them apart)."""
    local_rules = set(re.findall(r"^localrule (\w+):", run_output, flags=re.MULTILINE))
    return {
        comment: asked for comment, asked in requests.items()
        if not any(comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_")
                   for rule in local_rules)
    }


def assert_jobs_got_their_requests(requests: dict, run_output: str) -> None:
    run_id = re.search(r"SLURM run ID: (\S+)", run_output).group(1)
    requests = submitted_requests(requests, run_output)
    jobs = slurm_jobs(run_id)
    assert requests, "no job went to SLURM"
    assert set(jobs) == set(requests), "jobs not submitted, or not asked for"
    for comment, asked in requests.items():
        job = jobs[comment]
        assert job["JobState"] == "COMPLETED", (comment, job["JobState"])
        assert int(job["NumCPUs"]) == int(asked["cpus_per_task"]), comment
        assert job["MinMemoryNode"] == f"{asked['mem_mb']}M", comment
        assert slurm_minutes(job["TimeLimit"]) == int(asked["runtime"]), comment
        gpus_granted = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if "gpu" in asked:
            assert f"gres:gpu:{asked['gpu']}" in gpus_granted, comment
        else:
            assert "gpu" not in gpus_granted, comment


def report(capsys, line: str) -> None:
    """A line on the terminal even without -s (the SLURM wall times)."""
    with capsys.disabled():
        print(f"\n{line}")


# ---------------------------------------------------------------- tests
def test_mini_workflow_goes_through_sbatch_with_the_profiles_resources(slurm_cluster, tmp_path, capsys):
    workdir = tmp_path / "mini"
    workdir.mkdir()
    shutil.copy(MINI_WORKFLOW, workdir / "Snakefile")
    profile = write_test_profile(tmp_path / "profile", slurm_cluster["cpus"])

    requests = planned_requests(dry_run(workdir, profile))
    assert set(requests) == {"rule_pretrain", "rule_svm_full"}
    assert requests["rule_pretrain"]["gpu"] == "1"
    assert requests["rule_svm_full"]["cpus_per_task"] == "2", "cpus_per_task should follow the rule's threads"

    started = time.monotonic()
    output = run_snakemake(workdir, "--profile", str(profile))
    report(capsys, f"SLURM mini workflow (2 jobs): {time.monotonic() - started:.1f} s")

    assert_jobs_got_their_requests(requests, output)
    written = (workdir / "results" / "svm_full.txt").read_text()
    assert re.search(r"job=\d+ cpus=\d+ gpus=0", written), f"the pretrain job saw no GPU: {written!r}"


@pytest.mark.slow
def test_smoke_pipeline_runs_on_slurm_with_the_rules_resources(slurm_cluster, tmp_path, capsys):
    workdir = copy_workflow(tmp_path / "workflow")
    # Half the node per job, so that two jobs run side by side as they would on a cluster.
    profile = write_test_profile(tmp_path / "profile", max(1, slurm_cluster["cpus"] // 2))

    requests = planned_requests(dry_run(workdir, profile, "all_tracks", *SMOKE))
    assert any("gpu" in asked for asked in requests.values()), "no job asks for a GPU"

    started = time.monotonic()
    output = run_snakemake(workdir, "--profile", str(profile), "all_tracks", *SMOKE, timeout=1500)
    elapsed = time.monotonic() - started
    report(capsys, f"SLURM smoke pipeline end to end ({len(requests)} jobs): {elapsed:.1f} s")

    assert_jobs_got_their_requests(requests, output)
    leaderboard = (workdir / "results" / "tables" / "leaderboard.csv").read_text()
    assert "rot" in leaderboard and "random" in leaderboard
