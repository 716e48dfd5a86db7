"""Tiny VOC07-like SVM problems and an AP written independently of the package, shared by the full-SVM and the
low-shot reference tests (tests/ is on sys.path: conftest.py's folder)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve


def voc_like_problem(num_classes: int, num_train: int, num_test: int, dim: int, seed: int, signal: float,
                     difficult: float):
    """(train features, train labels, test features, test labels): non-negative float32 features carrying a class
    signal of strength ``signal``; int8 labels 1 / -1, and 0 (difficult) for a fraction ``difficult``."""
    rng = np.random.default_rng(seed)
    signatures = rng.normal(size=(num_classes, dim))

    def split(rows):
        labels = np.where(rng.random((rows, num_classes)) < 0.3, 1, -1).astype(np.int8)
        features = np.maximum((labels > 0) @ signatures * signal + rng.normal(size=(rows, dim)) + 0.3, 0)
        labels[rng.random(labels.shape) < difficult] = 0
        return features.astype(np.float32), labels

    return (*split(num_train), *split(num_test))


def voc_interpolated_ap(scores, labels) -> float:
    """AP of one class on the test split from scikit-learn's precision-recall curve: difficult (0) left out, the
    precision replaced by its monotone envelope, summed over the recall steps (VOC2010+)."""
    kept = labels != 0
    precision, recall, _ = precision_recall_curve(labels[kept] > 0, scores[kept])
    precision, recall = precision[::-1], recall[::-1]  # recall ascending
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))
