"""One restore helper: a checkpoint holds everything needed to continue a run exactly.

Contents: the method's state_dict (backbone, heads, memories, pseudo-labels), the optimiser, the position in
the run (epoch, position within the epoch's sample order, global iteration), the epoch's sample order itself,
accumulated training seconds and the config digest. The global RNG is re-seeded from (seed, epoch, iteration)
every iteration, so no RNG state needs saving. Loading is strict: a checkpoint of another config is refused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.io import ModelFileError, load_torch_file, torch_save_atomic


@dataclass
class RunPosition:
    epoch: int = 0
    position: int = 0  # batches of the current epoch already done
    iteration: int = 0  # global iteration count
    train_seconds: float = 0.0
    order: torch.Tensor | None = None  # the current epoch's sample order (None between epochs)
    totals: dict = field(default_factory=dict)  # sums of the current epoch's logs (for the epoch summary)
    last_loss: float | None = None  # the last finite loss (named when a run diverges)


CHECKPOINT = "a training checkpoint: a dict of tensors and plain values with 'method', 'optimizer', 'run', 'digest'"
CHECKPOINT_WRITER = "save_checkpoint (the training loop of rule pretrain or codc_round, at every checkpoint)"


def save_checkpoint(path: str | Path, method: torch.nn.Module, optimizer, run: RunPosition, digest: str) -> None:
    """Write everything needed to continue (atomically). Only tensors and plain values go in, so that
    :func:`restore_checkpoint` can read it with ``weights_only=True``."""
    torch_save_atomic(
        {"method": method.state_dict(), "optimizer": optimizer.state_dict(), "run": asdict(run), "digest": digest},
        path,
    )


def restore_checkpoint(path: str | Path, method: torch.nn.Module, optimizer, digest: str) -> RunPosition:
    """Load ``path`` into ``method`` and ``optimizer`` (strict) and return the run position.

    A truncated or damaged file raises ``CorruptFileError``, one holding anything but tensors and plain values
    ``ModelFileError``, both naming it; deleting it restarts the run from scratch.
    """
    restart = "Delete it to restart this run from scratch (epoch 0); the finished epochs will be trained again."
    state = load_torch_file(path, CHECKPOINT, restart, CHECKPOINT_WRITER)
    if not isinstance(state, dict) or not {"method", "optimizer", "run", "digest"} <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(f"{path}: not a checkpoint (found {found}); expected {CHECKPOINT}. {restart}")
    if state.get("digest") != digest:
        raise ValueError(f"{path}: checkpoint of another configuration ({state.get('digest')} != {digest}); "
                         "delete it to start afresh")
    method.load_state_dict(state["method"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    return RunPosition(**state["run"])
