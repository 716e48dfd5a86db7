"""Average precision: hand-worked PR curves, ties, edge cases, and agreement with scikit-learn's step AP."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from ssl_challenge.evaluation.ap import average_precision, non_interpolated_average_precision


def test_envelope_matters_hand_computed():
    # ranked labels P N N P P (3 positives):
    #   rank 1: recall 1/3 precision 1;  rank 2: 1/3, 1/2;  rank 3: 1/3, 1/3;  rank 4: 2/3, 2/4;  rank 5: 1, 3/5
    # envelope (best precision at this recall or higher): 1 at 1/3, 3/5 at 2/3, 3/5 at 1
    # interpolated AP = (1 + 3/5 + 3/5) / 3 = 0.7333...; step AP = (1 + 1/2 + 3/5) / 3 = 0.7
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, -1, -1, 1, 1])
    assert average_precision(scores, labels) == pytest.approx((1 + 0.6 + 0.6) / 3, abs=1e-12)
    assert non_interpolated_average_precision(scores, labels) == pytest.approx(0.7, abs=1e-12)


def test_monotone_case_hand_computed():
    # P N P N P: precision at the recall steps 1, 2/3, 3/5 is already monotone: AP = (1 + 2/3 + 3/5) / 3
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    labels = np.array([1, 0, 1, -1, 1])  # 0 counts as negative here: callers remove difficult items first
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)


def test_ties_form_one_threshold_whatever_their_order():
    # scores 0.9 (N), 0.5 (P, N tied), 0.1 (P): thresholds give (recall, precision) = (0, 0), (1/2, 1/3), (1, 2/4)
    # envelope 1/2 at both recall steps: AP = 1/2 * 1/2 + 1/2 * 1/2 = 0.5 ; step AP = 1/2 * 1/3 + 1/2 * 1/2
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([-1, 1, -1, 1])
    assert average_precision(scores, labels) == pytest.approx(0.5, abs=1e-12)
    assert non_interpolated_average_precision(scores, labels) == pytest.approx(1 / 6 + 1 / 4, abs=1e-12)
    swapped = np.array([-1, -1, 1, 1])  # the positive and negative of the tie exchanged: same AP
    assert average_precision(scores, swapped) == pytest.approx(0.5, abs=1e-12)
    assert non_interpolated_average_precision(scores, swapped) == pytest.approx(1 / 6 + 1 / 4, abs=1e-12)


def test_all_positive_and_perfect_ranking_give_one():
    assert average_precision(np.array([0.3, 0.2, 0.1]), np.array([1, 1, 1])) == 1.0
    assert average_precision(np.array([3.0, 2.0, -1.0]), np.array([1, 1, -1])) == 1.0
    assert average_precision(np.array([1.0, 1.0, 1.0]), np.array([1, 1, 1])) == 1.0


def test_all_tied_scores_give_the_positive_fraction():
    assert average_precision(np.zeros(4), np.array([1, -1, -1, -1])) == pytest.approx(0.25)


def test_returns_python_float():
    value = average_precision(np.array([0.2, 0.1], dtype=np.float32), np.array([1, -1], dtype=np.int8))
    assert type(value) is float
    assert type(non_interpolated_average_precision(np.array([0.2, 0.1]), np.array([1, -1]))) is float


def test_no_positive_raises():
    with pytest.raises(ValueError, match="no positive"):
        average_precision(np.array([0.2, 0.1]), np.array([-1, 0]))


def test_shape_mismatch_and_nan_raise():
    with pytest.raises(ValueError, match="scores but"):
        average_precision(np.array([0.2, 0.1]), np.array([1]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([np.nan, 0.1]), np.array([1, -1]))


def test_against_scikit_learn_on_random_rankings():
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = np.where(rng.random(60) < 0.3, 1, -1)
        labels[0] = 1
        scores = np.round(rng.normal(size=60), 1)  # rounding makes ties
        assert non_interpolated_average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12)
        precision, recall, _ = precision_recall_curve(labels, scores)
        precision, recall = precision[::-1], recall[::-1]  # increasing recall
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        expected = np.sum(np.diff(recall) * envelope[1:])
        assert average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)
        assert average_precision(scores, labels) >= non_interpolated_average_precision(scores, labels)
