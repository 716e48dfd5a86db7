"""profiles/slurm on a real one-node SLURM cluster (tools/slurm/start.sh): every job goes through sbatch with
the resources its rule asks for. Skipped, with the reason, where no cluster can be started (not root, no
apt-get); with REQUIRE_SLURM=1 in the environment (CI: .ci/run sets it) those cases fail instead, so that a green
run always includes this coverage.

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
# Set to 1 where the cluster must be tested (CI): a cluster that cannot be installed or started fails the tests
# instead of skipping them.
REQUIRE_VARIABLE = "REQUIRE_SLURM"
MINI_WORKFLOW = Path(__file__).resolve().parent / "mini" / "Snakefile"
SMOKE_CONFIG = "config/smoke.yaml"
DOCUMENTED_COMMAND = ["--profile", "slurm", "all_tracks"]
# A hang guard, not a speed target: three times the slowest run seen (about 22 minutes while other pipelines shared
# the 2 cores; a few minutes idle).
DOCUMENTED_COMMAND_HANG_GUARD_S = 3 * 22 * 60
# Memory asked by every job on the test cluster: small enough for several jobs to share the node.
TEST_MEM_MB = 1000


# ---------------------------------------------------------------- the cluster
def cluster_unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail with it where REQUIRE_SLURM=1 asks for the cluster."""
    required = os.environ.get(REQUIRE_VARIABLE, "")
    if required not in ("", "0", "1"):
        pytest.fail(f"{REQUIRE_VARIABLE}={required!r}: expected 1 (the cluster must start) or 0", pytrace=False)
    if required == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but the local SLURM cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


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
            cluster_unavailable("SLURM is not installed and cannot be installed here (needs root and apt-get): "
                                "run `sudo tools/slurm/install.sh`")
        installed = run_tool("install.sh", timeout=900)
        if installed.returncode != 0:
            cluster_unavailable(f"tools/slurm/install.sh failed:\n{tail(installed)}")
    if not is_root:
        cluster_unavailable("starting the local SLURM cluster needs root (daemons, device nodes, /etc/slurm)")
    started = run_tool("start.sh", timeout=180)
    if started.returncode != 0:
        cluster_unavailable(f"tools/slurm/start.sh could not start a local SLURM cluster:\n{tail(started)}")
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
    """A rule's resources on the one-node cluster: CPUs capped at the node's, memory at TEST_MEM_MB, one (fake)
    GPU per GPU job (a training job would otherwise start one process per GPU on the node's CPUs); runtimes and
    expressions (`threads`, `1440 * attempt`) as the profile says."""
    scaled = dict(resources)
    if isinstance(scaled.get("cpus_per_task"), int):
        scaled["cpus_per_task"] = min(scaled["cpus_per_task"], cpus)
    if "mem_mb" in scaled:
        scaled["mem_mb"] = TEST_MEM_MB
    if "gpu" in scaled:
        scaled["gpu"] = 1
    return scaled


def install_test_profile(config_home: Path, cpus: int, configfile: str | None) -> Path:
    """profiles/slurm installed as `make slurm-profile` installs it, under ``config_home`` (the XDG_CONFIG_HOME
    of the test's Snakemake), scaled to the test cluster (see scaled_resources), with status checks every second,
    no retries, and ``configfile`` instead of config/challenge.yaml (none: the workflow's own)."""
    settings = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert settings["configfile"] == "config/challenge.yaml", "the cluster profile runs the full scale"
    settings["default-resources"] = scaled_resources(settings["default-resources"], cpus)
    settings["set-resources"] = {
        rule: scaled_resources(resources, cpus) for rule, resources in settings["set-resources"].items()
    }
    settings.pop("configfile")
    if configfile:
        settings["configfile"] = configfile
    settings.update({
        "slurm-init-seconds-before-status-checks": 1,
        "seconds-between-status-checks": 1,
        "max-status-checks-per-second": 10,
        "latency-wait": 5,
        "retries": 0,
        "keep-going": False,
    })
    target = config_home / "snakemake" / "slurm"
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return config_home


def dry_run(workdir: Path, config_home: Path, *args: str) -> str:
    """A dry run under the profile. A dry run caps threads at --cores (1 unless given) where a SLURM run does
    not, so it gets many: `cpus_per_task: threads` must read the rule's threads as in the real run."""
    return run_snakemake(workdir, config_home, "--profile", "slurm", "--dry-run", "--cores", "1024", *args)


def run_snakemake(workdir: Path, config_home: Path, *args: str, timeout: int = 900) -> str:
    """Snakemake in ``workdir`` with ``config_home`` as XDG_CONFIG_HOME, where `--profile slurm` is looked up."""
    env = dict(sbin_environment(), PYTHONPATH=str(workdir / "src"), XDG_CONFIG_HOME=str(config_home))
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
    config_home = install_test_profile(tmp_path / "xdg", slurm_cluster["cpus"], configfile=None)

    requests = planned_requests(dry_run(workdir, config_home))
    assert set(requests) == {"rule_pretrain", "rule_svm_full"}
    assert requests["rule_pretrain"]["gpu"] == "1"
    assert requests["rule_svm_full"]["cpus_per_task"] == "2", "cpus_per_task should follow the rule's threads"

    started = time.monotonic()
    output = run_snakemake(workdir, config_home, "--profile", "slurm")
    report(capsys, f"SLURM mini workflow (2 jobs): {time.monotonic() - started:.1f} s")

    assert_jobs_got_their_requests(requests, output)
    written = (workdir / "results" / "svm_full.txt").read_text()
    assert re.search(r"job=\d+ cpus=\d+ gpus=0", written), f"the pretrain job saw no GPU: {written!r}"


@pytest.mark.slow
def test_the_documented_command_runs_the_pipeline_on_slurm(slurm_cluster, tmp_path, capsys):
    """`snakemake --profile slurm all_tracks`, exactly as the README gives it, from the repository root, with the
    profile installed where `make slurm-profile` puts it (pointing at the smoke config instead of the full scale)."""
    workdir = copy_workflow(tmp_path / "workflow")
    config_home = install_test_profile(tmp_path / "xdg", slurm_cluster["cpus"], configfile=SMOKE_CONFIG)

    requests = planned_requests(dry_run(workdir, config_home, "all_tracks"))
    assert any("gpu" in asked for asked in requests.values()), "no job asks for a GPU"

    started = time.monotonic()
    output = run_snakemake(workdir, config_home, *DOCUMENTED_COMMAND, timeout=DOCUMENTED_COMMAND_HANG_GUARD_S)
    elapsed = time.monotonic() - started
    report(capsys, f"`snakemake --profile slurm all_tracks` on the smoke config ({len(requests)} jobs): "
                   f"{elapsed:.1f} s")

    assert "Using profile slurm " in output
    assert_jobs_got_their_requests(requests, output)
    leaderboard = (workdir / "results" / "tables" / "leaderboard.csv").read_text()
    assert "rot" in leaderboard and "random" in leaderboard


def test_the_documented_command_is_the_one_the_readme_gives():
    for document in (REPO / "README.md", REPO / "profiles" / "README.md"):
        assert "snakemake " + " ".join(DOCUMENTED_COMMAND) in document.read_text(), document
