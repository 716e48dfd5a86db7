"""k-means computed once, on the main process, and its labels broadcast to every rank.

DC's per-epoch pseudo-labels and ODC's initial labels: every rank must train on the same labels, and k-means
(faiss) need not run once per GPU. A module of its own so that only the methods that cluster depend on it (a
method's code digest covers the modules it imports).
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..clustering.kmeans import kmeans
from ..engine import distributed


def kmeans_labels_on_main_process(features: torch.Tensor, num_clusters: int, iterations: int, seed: int,
                                  preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                  report: Callable[[str], None] | None = None) -> torch.Tensor:
    """Cluster ``features`` [N, D] once, on the main process, and give every rank the same labels: ``LongTensor[N]``
    on the features' device (DC's per-epoch pseudo-labels, ODC's initial labels). ``preprocess`` (e.g. DC's PCA)
    runs on the main process only. With one process this is ``kmeans(preprocess(features)).assignments``.
    ``report`` receives a line on the preprocessing and one on k-means (its objective and time)."""
    labels = torch.empty(features.shape[0], dtype=torch.int64, device=features.device)
    if distributed.is_main():
        started = time.monotonic()
        inputs = preprocess(features) if preprocess is not None else features
        if report is not None and preprocess is not None:
            report(f"features reduced to {inputs.shape[1]} dims in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        result = kmeans(inputs, num_clusters, iterations, seed=seed)
        labels.copy_(result.assignments)
        if report is not None:
            report(f"k-means, {num_clusters} clusters, {iterations} iterations, objective {result.objective:.6g}, "
                   f"in {time.monotonic() - started:.1f} s")
    distributed.broadcast_(labels)
    return labels
