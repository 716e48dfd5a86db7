"""Agreement between clusterings (NMI) and cluster sizes, against hand-computed values and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from ssl_challenge.clustering.agreement import cluster_sizes, contingency, normalized_mutual_information


def test_contingency_by_hand():
    assert contingency([0, 0, 1, 1], [5, 7, 7, 7]).tolist() == [[1, 1], [0, 2]]


def test_nmi_of_a_relabelled_partition_is_one_and_of_independent_ones_zero():
    assert normalized_mutual_information([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert normalized_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    assert normalized_mutual_information([3, 3, 3], [1, 1, 1]) == 1.0


def test_nmi_by_hand():
    # first = [0,0,1,1], second = [0,0,0,1]: H1 = ln 2, H2 = -(3/4 ln 3/4 + 1/4 ln 1/4),
    # I = 1/2 ln((1/2)/(1/2*3/4)) + 1/4 ln((1/4)/(1/2*3/4)) + 1/4 ln((1/4)/(1/2*1/4))
    h1 = math.log(2)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mutual = 0.5 * math.log(0.5 / 0.375) + 0.25 * math.log(0.25 / 0.375) + 0.25 * math.log(0.25 / 0.125)
    expected = mutual / ((h1 + h2) / 2)
    assert normalized_mutual_information([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)


def test_nmi_matches_scikit_learn_on_random_labelings():
    generator = np.random.default_rng(0)
    for _ in range(5):
        first, second = generator.integers(0, 7, 300), generator.integers(0, 4, 300)
        second[:150] = first[:150] % 4  # partly agreeing
        assert normalized_mutual_information(first, second) == pytest.approx(
            normalized_mutual_info_score(first, second), abs=1e-12)


def test_cluster_sizes_keep_empty_clusters_and_reject_foreign_ids():
    assert cluster_sizes(np.array([0, 2, 2]), 4) == [1, 0, 2, 0]
    with pytest.raises(ValueError, match="0..3"):
        cluster_sizes(np.array([4]), 4)
    with pytest.raises(ValueError, match="label 2 and 3"):
        normalized_mutual_information([0, 1], [0, 1, 1])
