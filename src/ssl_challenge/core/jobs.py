"""What every Snakemake script does around its one library call: log to the rule's log file, set threads."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from .numerics import RECORDED_VARIABLES, pin_environment

PACKAGE_DIR = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def job_logging(snakemake) -> Iterator[logging.Logger]:
    """Send stdout, stderr and a logger to ``snakemake.log[0]``; set thread counts from ``snakemake.threads``.

    In deterministic mode (config key ``resources.deterministic``) it also pins the numerical libraries' code
    paths (``numerics.pin_environment``) before the job imports them. Exceptions are logged with their traceback
    before they propagate, so the log explains a failed job.

    In the process of a Snakemake script, a job that succeeded ends that process when the block ends
    (:func:`end_process`): its outputs are written and closed by then, and Python's own teardown of torch's modules
    would add 0.45 s to each of the workflow's 250-odd jobs. So this block is each script's last statement
    (``tests/unit/test_jobs.py`` checks them); a failed job's exception propagates as usual.
    """
    check_imported_from_the_workflow(getattr(snakemake, "scriptdir", None))
    threads = str(max(1, int(getattr(snakemake, "threads", 1))))
    pin_environment(int(threads), deterministic_setting(snakemake))
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stream = open(log_path, "a", buffering=1) if log_path else sys.stderr
    logger = logging.getLogger(f"ssl_challenge.{snakemake.rule}")
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    started = time.time()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        try:
            logger.info("rule %s, wildcards %s, threads %s, ssl_challenge from %s", snakemake.rule,
                        dict(snakemake.wildcards), threads, PACKAGE_DIR)
            logger.info("numerics: %s", {name: os.environ[name] for name in ("SSL_CHALLENGE_DETERMINISTIC",)
                                         + RECORDED_VARIABLES if name in os.environ})
            yield logger
            logger.info("done in %.1f s", time.time() - started)
        except BaseException:
            logger.exception("failed after %.1f s", time.time() - started)
            raise
        finally:
            if log_path:
                stream.flush()
    if run_by_snakemake(snakemake):
        end_process()


def run_by_snakemake(snakemake) -> bool:
    """Whether ``snakemake`` is the object Snakemake gives a script (not a test's stand-in)."""
    return type(snakemake).__module__.partition(".")[0] == "snakemake"


def end_process() -> None:
    """End this process with status 0 at once: flush the logging handlers and standard streams, then ``os._exit``
    (no atexit handlers, no garbage collection of the modules)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def check_imported_from_the_workflow(scriptdir: str | None) -> None:
    """Refuse to run a workflow's script with the package of another checkout (a virtual environment whose
    editable install points elsewhere): the rule's code digest was computed from the workflow's own ``src/``.
    Nothing to check when the workflow has no ``src/`` beside its scripts (``scriptdir`` is workflow/scripts)."""
    if not scriptdir:
        return
    expected = Path(scriptdir).resolve().parents[1] / "src" / "ssl_challenge"
    if expected.is_dir() and expected != PACKAGE_DIR:
        raise ImportError(f"this job imported ssl_challenge from {PACKAGE_DIR}, not from the workflow's {expected}: "
                          f"its code would not be the code its rule's digest describes; run `pip install -e .` in "
                          f"{expected.parents[1]}, or put {expected.parent} first on PYTHONPATH")


def deterministic_setting(snakemake) -> bool:
    """The config key ``resources.deterministic`` of the job's workflow (true when absent)."""
    value = (getattr(snakemake, "config", None) or {}).get("resources", {}).get("deterministic", True)
    if not isinstance(value, bool):
        raise ValueError(f"config key resources.deterministic: expected true or false, got {value!r}")
    return value
