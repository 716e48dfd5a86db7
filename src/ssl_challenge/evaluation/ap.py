"""Average precision of a ranking: the VOC2010+ all-point interpolated area under the precision-recall curve.

The curve is evaluated at every distinct score threshold (tied scores form one point, so the result does not
depend on how ties happen to be ordered). Precision is replaced by its monotone envelope (the best precision at
this recall or any higher one), and the area is summed over the recall steps. This is not the 11-point VOC2007
variant, and it differs from scikit-learn's ``average_precision_score`` (non-interpolated), which the SVM
protocol uses only for choosing the cost by cross-validation.
"""
from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """All-point interpolated AP of ``scores`` [N] against ``labels`` [N] (> 0 positive, <= 0 negative).

    Callers remove difficult items first. Returns a python float in [0, 1]. Raises ``ValueError`` when there is no
    positive (the AP is undefined) or when the shapes disagree.
    """
    recall, precision = _precision_recall(scores, labels)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or any higher
    return float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))


def _precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct score threshold, from the highest score down."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"AP: {scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError("average_precision: scores contain NaN or infinity")
    positive = labels > 0
    num_positives = int(positive.sum())
    if num_positives == 0:
        raise ValueError(f"AP: no positive among {labels.size} items; AP is undefined")

    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    # The last item of each run of equal scores closes one threshold.
    threshold_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    true_positives = np.cumsum(sorted_positive)[threshold_ends]
    retrieved = threshold_ends + 1
    recall = true_positives / num_positives
    precision = true_positives / retrieved
    return recall, precision


def non_interpolated_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score``: sum over thresholds of (recall step) x precision, no envelope.

    The cross-validation score of the SVM protocol (the reference uses ``scoring="average_precision"``); written
    here because scikit-learn's argument checks cost more than the computation for the thousands of CV folds.
    Same conventions as :func:`average_precision` (ties form one threshold; ``ValueError`` without positives).
    """
    recall, precision = _precision_recall(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
