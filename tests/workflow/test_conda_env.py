"""The conda environment of the rules installs the package itself (envs/pipeline.post-deploy.sh)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from snakemake.sourcecache import infer_source_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "envs" / "pipeline.post-deploy.sh"


def fake_python(folder: Path) -> Path:
    """A ``python`` that records its arguments instead of installing anything."""
    record = folder / "python-arguments"
    python = folder / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return record


def run_script(cwd: Path, bin_folder: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(SCRIPT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_snakemake_finds_the_post_deploy_script_beside_the_environment():
    found = infer_source_file(str(REPO / "envs" / "pipeline.yaml")).replace_suffix([".yaml", ".yml"],
                                                                                    ".post-deploy.sh")
    assert Path(found.get_path_or_uri(secret_free=True)) == SCRIPT and SCRIPT.is_file()


def test_it_installs_the_checkout_it_runs_from(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "pyproject.toml", checkout)
    record = fake_python(tmp_path)
    result = run_script(checkout, tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    assert record.read_text().split("\n")[:-1] == ["-m", "pip", "install", "--no-deps", "--editable", str(checkout)]


def test_elsewhere_it_fails_saying_where_to_run_snakemake(tmp_path):
    record = fake_python(tmp_path)
    result = run_script(tmp_path, tmp_path / "bin")
    assert result.returncode == 1
    assert f"{tmp_path} is not the ssl-challenge checkout" in result.stderr and "checkout's root" in result.stderr
    assert not record.exists()
