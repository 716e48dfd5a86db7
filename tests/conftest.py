"""Shared test fixtures: the repository root, a scratch copy of the workflow, and the snakemake command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW_PATHS = ["Snakefile", "rules", "workflow", "config", "envs", "profiles", "src", "report"]


def copy_workflow(target: Path) -> Path:
    """A scratch copy of the workflow (no results, no venv, no untracked config/site.yaml of this machine) that a
    test may edit freely."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_PATHS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "site.yaml"))
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def run_snakemake(workdir: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"))
    env.setdefault("SLURM_CONF", "/dev/null")  # no 10 s `scontrol` time-out per start (see the Makefile)
    result = subprocess.run(
        SNAKEMAKE + list(args), cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


class Payload:
    """What a planted model file or checkpoint may hold: unpickling it writes a marker file (any code could run
    instead). Tests of safe loading plant one and check that the marker never appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('the payload ran')",))


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "workflow")


SMOKE_CONFIG = ["--configfile", "config/smoke.yaml"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> tuple[Path, float]:
    """ONE finished smoke run for the whole session: (workdir, seconds it took). Tests that only dry-run use the
    workdir in place (undoing their edits); tests that run jobs take a ``smoke_copy``."""
    import time

    workdir = copy_workflow(tmp_path_factory.mktemp("smoke") / "workflow")
    started = time.monotonic()
    # The time-out only guards against a hang: test_smoke_pipeline asserts the run's time itself.
    run_snakemake(workdir, "--cores", "2", "all_tracks", *SMOKE_CONFIG, timeout=1800)
    return workdir, time.monotonic() - started


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    """A private copy of the finished smoke workdir (results and .snakemake metadata included, times kept)."""
    return Path(shutil.copytree(smoke_run[0], tmp_path / "workflow", symlinks=True))
