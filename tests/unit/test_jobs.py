"""job_logging refuses to run a workflow's script with another checkout's package (its code digest would lie), and
ends a Snakemake script's process as soon as the job has succeeded."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssl_challenge.core import jobs

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
    """A deployed workflow (scripts, no src/ beside them) runs with whatever package is installed; the same folder
    with a src/ssl_challenge of its own is refused, so the check is reached and it is src/ that decides."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    scripts = tmp_path / "deployed" / "workflow" / "scripts"
    scripts.mkdir(parents=True)
    ran = []
    with jobs.job_logging(fake_job(tmp_path, scripts)):
        ran.append(True)
    assert ran == [True]
    log = (tmp_path / "job.log").read_text()
    assert f"ssl_challenge from {jobs.PACKAGE_DIR}" in log and "done in" in log and "failed" not in log
    (tmp_path / "deployed" / "src" / "ssl_challenge").mkdir(parents=True)
    with pytest.raises(ImportError, match="not from the workflow's"):
        with jobs.job_logging(fake_job(tmp_path, scripts)):
            ran.append(True)
    assert ran == [True]


def test_every_workflow_script_ends_with_its_job_logging_block():
    """job_logging ends the process of a job that succeeded: a statement after the block would never run."""
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    assert len(scripts) >= 15
    for script in scripts:
        last = ast.parse(script.read_text()).body[-1]
        assert isinstance(last, ast.With) and ast.unparse(last.items[0].context_expr) == "job_logging(snakemake)", (
            f"{script.name}: the last statement must be `with job_logging(snakemake) ...`")


JOB_SCRIPT = """\
import atexit
from pathlib import Path

from ssl_challenge.core.jobs import job_logging

atexit.register(lambda: Path(snakemake.params.marker).write_text("teardown ran"))
with job_logging(snakemake) as log:
    print("printed by the job")
    if snakemake.wildcards.name == "fails":
        raise RuntimeError("the job fails")
    with open(snakemake.output[0], "w") as output:
        output.write("x" * 100_000)  # a buffered file, written and closed inside the block
"""


def test_a_snakemake_job_that_succeeded_ends_without_teardown_and_keeps_its_outputs_and_log(tmp_path):
    (tmp_path / "workflow" / "scripts").mkdir(parents=True)
    (tmp_path / "workflow" / "scripts" / "job.py").write_text(JOB_SCRIPT)
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""\
        rule job:
            output: "out/{name}.txt"
            log: "logs/{name}.log"
            params: marker=lambda wildcards: f"teardown_{wildcards.name}"
            script: "workflow/scripts/job.py"
        """))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), SLURM_CONF="/dev/null")

    def snakemake(target):
        return subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", "1"], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    done = snakemake("out/works.txt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "works.txt").read_text() == "x" * 100_000
    log = (tmp_path / "logs" / "works.log").read_text()
    assert "printed by the job" in log and "done in" in log
    assert not (tmp_path / "teardown_works").exists()  # the process ended before Python's teardown
    failed = snakemake("out/fails.txt")
    assert failed.returncode != 0
    assert "RuntimeError: the job fails" in (tmp_path / "logs" / "fails.log").read_text()
    assert (tmp_path / "teardown_fails").read_text() == "teardown ran"  # a failure exits the usual way
