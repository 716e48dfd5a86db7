"""How two clusterings of the same samples agree, and how a clustering is spread: per-epoch diagnostics of the
clustering methods (DC's successive clusterings, ODC's memory), written to the run's metrics as JSON lines.

numpy only (no torch, no faiss): the training curves of the report read the records, not these functions.
"""
from __future__ import annotations

import numpy as np


def contingency(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``int[N]`` x2 (cluster ids, any non-negative integers) -> ``int64[A, B]`` counts of samples per pair of
    clusters (rows: the distinct ids of ``first`` in increasing order, columns: those of ``second``)."""
    first, second = np.asarray(first).ravel(), np.asarray(second).ravel()
    if first.shape != second.shape:
        raise ValueError(f"contingency: the clusterings label {first.size} and {second.size} samples")
    _, rows = np.unique(first, return_inverse=True)
    _, columns = np.unique(second, return_inverse=True)
    table = np.zeros((rows.max(initial=-1) + 1, columns.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (rows, columns), 1)
    return table


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (natural log) of the distribution given by non-negative ``counts``."""
    probabilities = np.asarray(counts, dtype=np.float64).ravel()
    probabilities = probabilities[probabilities > 0] / probabilities.sum()
    return float(-(probabilities * np.log(probabilities)).sum())


def normalized_mutual_information(first: np.ndarray, second: np.ndarray) -> float:
    """NMI(first, second) = I / ((H(first) + H(second)) / 2) of two labelings ``int[N]`` of the same samples, in
    [0, 1] (the arithmetic normalisation, scikit-learn's default; DeepCluster's Fig. 2 plots it between
    consecutive epochs). Two labelings that are each a single cluster are identical partitions: 1."""
    table = contingency(first, second)
    total = table.sum()
    if total == 0:
        raise ValueError("normalized_mutual_information: no samples")
    first_entropy, second_entropy = entropy(table.sum(axis=1)), entropy(table.sum(axis=0))
    if first_entropy == 0.0 and second_entropy == 0.0:
        return 1.0
    joint = table[table > 0] / total
    outer = np.outer(table.sum(axis=1), table.sum(axis=0))[table > 0] / total**2
    mutual = float((joint * np.log(joint / outer)).sum())
    return max(0.0, min(1.0, 2.0 * mutual / (first_entropy + second_entropy)))


def cluster_sizes(labels: np.ndarray, num_clusters: int) -> list[int]:
    """``int[N]`` labels in 0..num_clusters-1 -> the number of samples of each cluster (empty ones included)."""
    labels = np.asarray(labels).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_clusters):
        raise ValueError(f"cluster_sizes: labels outside 0..{num_clusters - 1}")
    return np.bincount(labels, minlength=num_clusters).astype(int).tolist()
