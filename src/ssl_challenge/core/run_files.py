"""The files of a training run folder, named once.

A run folder (``results/models/{model}/runs/<digest>/`` for pretraining, the detector's under
``results/eval/{model}/``) holds what the training loop writes and the stages publish: the final weights, the
checkpoint a killed run resumes from, the per-epoch (or per-interval) metrics, and the intermediate backbones
kept for time-to-accuracy curves. The engine writes them, the pretraining stage and the snapshot rule copy them
out, the tables' provenance finds the run that made a model file by them. Torch-free: the rules import it.
"""
from __future__ import annotations

MODEL = "model.pth"
CHECKPOINT = "checkpoint.pth"
METRICS = "metrics.jsonl"
IDENTITY = "identity.json"
SNAPSHOTS = "snapshots"
SNAPSHOT_PATTERN = "epoch_*.pth"


def snapshot_name(epoch: int) -> str:
    """The file name, in ``SNAPSHOTS``, of the backbone after epoch ``epoch`` (1-based)."""
    return f"epoch_{int(epoch):04d}.pth"
