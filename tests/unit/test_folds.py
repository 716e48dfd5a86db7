"""The SVM protocol's folds against scikit-learn's StratifiedKFold, and on a hand-computed case."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from ssl_challenge.evaluation.folds import stratified_folds


def test_hand_computed_split():
    # Classes by first appearance: -1 -> 0 (rows 0, 2, 3, 5), +1 -> 1 (rows 1, 4, 6). Sorted class numbers
    # [0, 0, 0, 0, 1, 1, 1] dealt to 3 folds: fold 0 gets [0, 0, 1], fold 1 [0, 1], fold 2 [0, 1].
    # Class 0's rows in order go to folds 0, 0, 1, 2; class 1's to folds 0, 1, 2.
    targets = np.array([-1, 1, -1, -1, 1, -1, 1])
    folds = stratified_folds(targets, 3)
    assert [test.tolist() for _, test in folds] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [train.tolist() for train, _ in folds] == [[3, 4, 5, 6], [0, 1, 2, 5, 6], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("seed", range(40))
def test_same_folds_as_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(6, 60))
    targets = np.where(rng.random(size) < rng.uniform(0.1, 0.6), 1, -1)
    if min((targets == 1).sum(), (targets == -1).sum()) < 1:
        targets[0] = -targets[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = list(StratifiedKFold(n_splits=3).split(np.zeros((size, 1)), targets))
    got = stratified_folds(targets, 3)
    for (train, test), (expected_train, expected_test) in zip(got, expected):
        np.testing.assert_array_equal(test, expected_test)
        np.testing.assert_array_equal(train, expected_train)


def test_three_classes_and_five_folds_match_scikit_learn():
    targets = np.random.default_rng(7).integers(0, 3, size=50)
    expected = list(StratifiedKFold(n_splits=5).split(np.zeros((50, 1)), targets))
    for (train, test), (expected_train, expected_test) in zip(stratified_folds(targets, 5), expected):
        np.testing.assert_array_equal(test, expected_test)
        np.testing.assert_array_equal(train, expected_train)


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="cannot fill 3 folds"):
        stratified_folds(np.array([1, -1]), 3)
