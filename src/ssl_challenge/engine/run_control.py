"""Run control shared by the training loops (pretraining, the detector, the online probe): the seeds derived from
a run's position, SIGTERM/SIGUSR1 turned into a checkpoint and :class:`Preempted`, and a divergence turned into
:class:`TrainingDiverged` naming the model, the position and the last finite loss."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.io import read_jsonl, write_text_atomic
from .checkpoint import RunPosition


class Preempted(RuntimeError):
    """Raised after the checkpoint is written when SIGTERM/SIGUSR1 asked the job to stop."""


def checkpoint_or_stop(run: RunPosition, every: int, stop: dict, checkpoint: Callable[[], None], progress,
                       stop_after_iterations: int | None) -> bool:
    """After an iteration that is not the last: write the checkpoint every ``every`` iterations and when a signal
    came (``stop``, from :func:`stop_requests`), then raise :class:`Preempted` on the signal; True when
    ``stop_after_iterations`` (tests: a simulated kill after a checkpoint) ends the run here. Pretraining and the
    detector share it."""
    if run.iteration % every == 0 or stop["signal"]:
        checkpoint()
    if stop["signal"]:
        progress.close()
        raise Preempted(f"{stop['signal']} received: checkpoint written at iteration {run.iteration}")
    if stop_after_iterations is not None and run.iteration >= stop_after_iterations:
        checkpoint()
        progress.close()
        return True
    return False


class TrainingDiverged(FloatingPointError):
    """The loss, the gradients, the extracted features or the weights became NaN or infinite."""


class NonFiniteValues(FloatingPointError):
    """Raised inside the loop where a non-finite value is found; :func:`pretrain` turns it into
    :class:`TrainingDiverged` with the model, the position and the last finite loss."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (stable across processes and Python versions)."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(2, np.uint64)[0] >> 1)


@contextmanager
def stop_requests() -> Iterator[dict]:
    """Turn SIGTERM/SIGUSR1 into a flag the loop checks after each iteration (handlers restored on exit)."""
    flag = {"signal": None}

    def request_stop(signum, _frame):
        flag["signal"] = signal.Signals(signum).name

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        try:
            previous[signum] = signal.signal(signum, request_stop)
        except ValueError:  # not the main thread: no handlers, the run is simply not preemptible
            pass
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def divergence_reported(name: str, run: RunPosition) -> Iterator[None]:
    """Turn :class:`NonFiniteValues` raised inside into :class:`TrainingDiverged` naming the model, the position
    (read from ``run`` when it happens) and the last finite loss."""
    try:
        yield
    except NonFiniteValues as error:
        last = "none since the start" if run.last_loss is None else format(run.last_loss, ".6g")
        raise TrainingDiverged(
            f"{name}: training diverged at epoch {run.epoch + 1}, iteration {run.iteration + 1}: {error.what}; "
            f"last finite loss: {last}. No model file was written and no checkpoint holds the diverged state. "
            "Lower the learning rate (optimizer.lr) or lengthen the warm-up (schedule.warmup_epochs), then rerun"
        ) from None


def truncate_metrics(path: Path, iteration: int) -> None:
    """On resume, drop metric records written after the checkpoint (they will be written again)."""
    if path.exists():
        kept = [r for r in read_jsonl(path) if r.get("iteration", 0) <= iteration]
        write_text_atomic(path, "".join(__import__("json").dumps(r) + "\n" for r in kept))
