"""job_logging refuses to run a workflow's script with another checkout's package (its code digest would lie)."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssl_challenge import jobs

REPO = Path(__file__).resolve().parents[2]


def fake_job(tmp_path, scriptdir):
    return SimpleNamespace(threads=1, log=[str(tmp_path / "job.log")], rule="some_rule", wildcards={}, config={},
                           scriptdir=str(scriptdir))


def test_a_script_of_another_checkout_is_refused_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    other = tmp_path / "other"
    (other / "src" / "ssl_challenge").mkdir(parents=True)
    (other / "workflow" / "scripts").mkdir(parents=True)
    ran = []
    with pytest.raises(ImportError) as error:
        with jobs.job_logging(fake_job(tmp_path, other / "workflow" / "scripts")):
            ran.append(True)
    assert not ran
    assert str(jobs.PACKAGE_DIR) in str(error.value) and str(other / "src" / "ssl_challenge") in str(error.value)
    assert f"pip install -e .` in {other}" in str(error.value)


def test_the_workflows_own_package_runs_and_the_log_says_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    assert jobs.PACKAGE_DIR == REPO / "src" / "ssl_challenge"  # the tests run on this checkout's src/
    with jobs.job_logging(fake_job(tmp_path, REPO / "workflow" / "scripts")):
        pass
    assert f"ssl_challenge from {REPO / 'src' / 'ssl_challenge'}" in (tmp_path / "job.log").read_text()


def test_a_workflow_without_src_is_not_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    (tmp_path / "deployed" / "workflow" / "scripts").mkdir(parents=True)
    with jobs.job_logging(fake_job(tmp_path, tmp_path / "deployed" / "workflow" / "scripts")):
        pass
