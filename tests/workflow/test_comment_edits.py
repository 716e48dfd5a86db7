"""A comment or docstring edit in a module every stage imports leaves `snakemake -n all_tracks` with nothing to do,
while a code edit in the same module still marks the jobs it reaches (the code digest is of the syntax tree).

The finished state is made cheaply: every output of the default DAG is created empty and `snakemake --touch`
records each job's metadata (params included) as a finished run would, in about half a minute instead of a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_snakemake
from dryrun import planned_jobs

pytestmark = pytest.mark.slow  # about 40 s: 253 touched jobs (Snakemake sleeps 0.1 s per touched job)
NOTHING_TO_DO = "Nothing to be done"
FOUNDATION_MODULE = "src/ssl_challenge/core/io.py"  # imported by every stage's script


def planned_outputs(dry_run_output: str) -> list[str]:
    """The output paths of every job of a dry run (`output: a, b` lines)."""
    outputs = []
    for line in dry_run_output.splitlines():
        if line.strip().startswith("output: "):
            outputs += [path.strip() for path in line.strip()[len("output: "):].split(",")]
    return outputs


def finish_by_touching(workdir: Path, target: str) -> int:
    """Create each planned output (a path without a suffix is a directory() output) and record the jobs as
    finished with `--touch`; returns how many jobs were planned."""
    dry_run = run_snakemake(workdir, "-n", target).stdout
    outputs = planned_outputs(dry_run)
    for output in outputs:
        path = workdir / output
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    run_snakemake(workdir, "--touch", "--forceall", "--cores", "1", target)
    return len(planned_jobs(dry_run))


def insert_after(text: str, anchor: str, insertion: str, start: int = 0) -> str:
    index = text.index(anchor, start) + len(anchor)
    return text[:index] + insertion + text[index:]


def documentation_edited(source: str) -> str:
    """``source`` with its module docstring and its first function's docstring edited, a comment line before
    that function and one at the end, and two blank lines more: the same code."""
    edited = insert_after(source, '"""', "Edited: ")  # the module docstring
    edited = insert_after(edited, '"""', "Edited too: ", edited.index("\ndef "))
    edited = insert_after(edited, "\n", "\n\n# a comment line before the first function\n", edited.index("\ndef "))
    return edited + "# a comment line appended\n"


def test_documentation_edited_changes_documentation_only():
    source = '"""Module."""\nimport os\n\ndef f():\n    """Function."""\n    return os.sep\n'
    assert documentation_edited(source) == (
        '"""Edited: Module."""\nimport os\n\n\n\n# a comment line before the first function\n'
        'def f():\n    """Edited too: Function."""\n    return os.sep\n# a comment line appended\n')


def test_comment_and_docstring_edits_leave_every_job_up_to_date_but_code_edits_do_not(workflow_copy):
    planned = finish_by_touching(workflow_copy, "all_tracks")
    assert planned > 200
    assert NOTHING_TO_DO in run_snakemake(workflow_copy, "-n", "all_tracks").stdout

    module = workflow_copy / FOUNDATION_MODULE
    original = module.read_text()
    module.write_text(documentation_edited(original))
    assert NOTHING_TO_DO in run_snakemake(workflow_copy, "-n", "all_tracks").stdout

    module.write_text(original + "\nEDITED_CODE = 1\n")
    jobs = planned_jobs(run_snakemake(workflow_copy, "-n", "all_tracks").stdout)
    by_rule = {job.rule: job for job in jobs}
    assert "params" in by_rule["prepare_data"].reason.lower()  # its code param holds the digest of core/io.py
    assert {"pretrain", "svm_full", "leaderboard", "all_tracks"} <= set(by_rule)
    assert len(jobs) == planned  # every stage imports core/io.py: everything downstream of the data reruns
