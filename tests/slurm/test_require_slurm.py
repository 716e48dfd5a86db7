"""REQUIRE_SLURM=1 (set by .ci/run) turns the SLURM fixture's skips into failures: the fixture of
test_slurm_profile.py is run by a pytest subprocess on a generated test whose cluster start is forced to fail (a
stand-in tools folder whose start.sh and install.sh exit 1, and a stand-in `slurmctld` on PATH so that the fixture
takes the start path). Needs no cluster: it runs everywhere, unmarked."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

GENERATED_TEST = '''\
from pathlib import Path

import test_slurm_profile as slurm
from test_slurm_profile import slurm_cluster  # noqa: F401 (the fixture under test)

slurm.TOOLS = Path({tools!r})


def test_with_the_cluster(slurm_cluster):
    pass
'''
FAILING_TOOL = """#!/usr/bin/env bash
echo "$0 ran" >> {marker}
echo "forced failure of $(basename "$0") for the test" >&2
exit 1
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def run_fixture(tmp_path: Path, require: str | None) -> tuple[subprocess.CompletedProcess, str]:
    """pytest on the generated test with REQUIRE_SLURM=``require`` (None: unset); (result, the tools that ran)."""
    tools, bin_dir, marker = tmp_path / "tools", tmp_path / "bin", tmp_path / "tools_run.txt"
    tools.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    marker.write_text("")
    for script in ("install.sh", "start.sh", "stop.sh"):
        executable(tools / script, FAILING_TOOL.format(marker=marker))
    executable(bin_dir / "slurmctld", "#!/bin/sh\nexit 1\n")  # only looked up, never started
    (tmp_path / "test_generated.py").write_text(GENERATED_TEST.format(tools=str(tools)))
    env = {key: value for key, value in os.environ.items() if key not in ("REQUIRE_SLURM", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "slurm"), str(REPO / "src")])
    if require is not None:
        env["REQUIRE_SLURM"] = require
    result = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-W",
                             "ignore::pytest.PytestUnknownMarkWarning", "test_generated.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return result, marker.read_text()


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.parametrize("require", [None, "0"])
def test_without_require_slurm_a_failed_start_skips(tmp_path, require):
    result, tools_run = run_fixture(tmp_path, require)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output and "passed" not in output and "error" not in output, output
    if is_root():  # the start itself was tried and failed (elsewhere: "needs root")
        assert "start.sh ran" in tools_run and "could not start a local SLURM cluster" in output, output
    else:
        assert "needs root" in output, output


def test_with_require_slurm_a_failed_start_fails(tmp_path):
    result, tools_run = run_fixture(tmp_path, "1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 error" in output and "skipped" not in output, output
    assert "REQUIRE_SLURM=1 but the local SLURM cluster is unavailable" in output, output
    if is_root():
        assert "start.sh ran" in tools_run and "forced failure of start.sh" in output, output


def test_an_unknown_require_slurm_value_fails(tmp_path):
    result, _ = run_fixture(tmp_path, "yes")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "REQUIRE_SLURM='yes': expected 1" in output, output


def test_ci_requires_the_cluster():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert "export REQUIRE_SLURM=1" in lines
    assert lines.index("export REQUIRE_SLURM=1") < next(i for i, line in enumerate(lines) if line.startswith("make "))
