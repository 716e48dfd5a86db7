"""The Makefile: a bare `make` prints the targets (it never installs or runs anything), every target has its line,
names use underscores (the old hyphenated names are aliases), and `make dry_run` is the readable summary."""
from __future__ import annotations

import re
import subprocess

from conftest import REPO, run_snakemake

ALIASES = {"dry-run": "dry_run", "clean-results": "clean_results", "slurm-profile": "slurm_profile"}


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def makefile_targets() -> dict[str, str]:
    """Each target of the Makefile and its prerequisites (variables, special targets and files left out)."""
    targets = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([a-zA-Z_-]+):(?!=)([^#]*)", line)
        if match:
            targets[match.group(1)] = match.group(2).strip()
    return targets


def test_a_bare_make_prints_help_and_runs_nothing():
    bare, dry = make(), subprocess.run(["make", "-n"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and bare.stdout == make("help").stdout
    assert "pip" not in dry.stdout and "snakemake" not in dry.stdout  # only the help recipe would run
    listed = dict(re.findall(r"^  (\S+) +(.+)$", bare.stdout, flags=re.MULTILINE))
    assert set(listed) == set(makefile_targets())  # every target, once
    assert all(len(text) > 10 for text in listed.values())


def test_one_naming_style_with_the_old_names_as_aliases():
    targets = makefile_targets()
    expected = {"all_tracks", "test", "dry_run", "fullscale_check", "slurm_profile", "evaluate", "preflight"}
    assert expected <= set(targets)
    for name, prerequisites in targets.items():
        if "-" in name:
            assert ALIASES.get(name) == prerequisites, f"{name}: a hyphenated name is only an alias"


def test_test_lists_skips_and_slowest_tests_and_dry_run_is_the_summary():
    assert "pytest -rs --durations=25" in make("-n", "test").stdout
    assert "snakemake all_tracks -n --quiet rules" in make("-n", "dry_run").stdout
    assert make("-n", "dry-run").stdout == make("-n", "dry_run").stdout


def test_the_dry_run_summary_counts_jobs_per_rule(workflow_copy):
    output = run_snakemake(workflow_copy, "all_tracks", "-n", "--quiet", "rules").stdout
    counts = dict(re.findall(r"^(\w+) +(\d+)$", output, flags=re.MULTILINE))
    assert counts["all_tracks"] == "1" and int(counts["total"]) > 200
    assert "wildcards:" not in output  # no block per job
