"""What every Snakemake script does around its one library call: log to the rule's log file, set threads."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Iterator


@contextlib.contextmanager
def job_logging(snakemake) -> Iterator[logging.Logger]:
    """Send stdout, stderr and a logger to ``snakemake.log[0]``; set thread counts from ``snakemake.threads``.

    Exceptions are logged with their traceback before they propagate, so the log explains a failed job.
    """
    threads = str(max(1, int(getattr(snakemake, "threads", 1))))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, threads)
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
            logger.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards), threads)
            yield logger
            logger.info("done in %.1f s", time.time() - started)
        except BaseException:
            logger.exception("failed after %.1f s", time.time() - started)
            raise
        finally:
            if log_path:
                stream.flush()
