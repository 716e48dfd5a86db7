"""The low-shot track against an independent reference: the protocol written out as loops over k, samples, classes
and costs with scikit-learn alone (LinearSVC with the reference settings; average precision from scikit-learn's
precision-recall curve with the VOC2010 envelope), on a tiny problem. Every figure of the track must equal the
reference's: each sample's mAP at each cost, each k's chosen cost (best mean-over-samples test mAP, ties to the
first), the mean, min, max and std over samples at that cost, and the track score (mean over k)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from ssl_challenge.evaluation.lowshot import draw_lowshot_samples, evaluate_lowshot
from svm_fixture import voc_interpolated_ap, voc_like_problem

CLASSES = ["cat", "dog", "bus"]
K_VALUES = [1, 2, 4]
NUM_SAMPLES = 3
COSTS = [0.001, 0.01, 0.1, 1.0, 10.0]
# The reference's LinearSVC: squared hinge, L2 penalty, the bias a regularised constant feature (intercept_scaling
# 1), positives weighted 2 and negatives 1, liblinear's dual solver with tol 1e-4 and at most 2000 iterations.
REFERENCE_SETTINGS = dict(penalty="l2", loss="squared_hinge", dual=True, tol=1e-4, max_iter=2000,
                          intercept_scaling=1.0, class_weight={1: 2, -1: 1}, random_state=0)
# The exact optimum of the same problems (the track's default solver is exact; liblinear stops at its tolerance).
CONVERGED_SETTINGS = dict(REFERENCE_SETTINGS, tol=1e-8, max_iter=1_000_000)


def tiny_problem(seed=0, rows_train=150, rows_test=80, dim=12):
    """Non-negative features with a class signal; labels 1 / -1 / 0 (difficult) in both splits."""
    return voc_like_problem(len(CLASSES), rows_train, rows_test, dim, seed, signal=0.6, difficult=0.08)


def reference_lowshot(train_x, test_x, test_y, samples, settings):
    """The protocol by hand: per k, sample, cost: the sample's mAP (x100) over the classes, each class's SVM
    trained on that class's drawn rows only; then per k the cost with the best mean over samples."""
    train_x = np.asarray(train_x, np.float64)
    test_x = np.asarray(test_x, np.float64)
    train_x = train_x / (np.linalg.norm(train_x, axis=1, keepdims=True) + 1e-5)
    test_x = test_x / (np.linalg.norm(test_x, axis=1, keepdims=True) + 1e-5)
    per_k, maps = {}, {}
    for k in K_VALUES:
        sample_maps = np.zeros((NUM_SAMPLES, len(COSTS)))
        for s, draw in enumerate(samples["samples"][str(k)]):
            for j, cost in enumerate(COSTS):
                aps = []
                for c in range(len(CLASSES)):
                    positives, negatives = draw["positives"][c], draw["negatives"][c]
                    rows = positives + negatives
                    targets = np.array([1] * len(positives) + [-1] * len(negatives))
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # liblinear's convergence warnings: the reference has them
                        model = LinearSVC(C=cost, **settings).fit(train_x[rows], targets)
                    aps.append(voc_interpolated_ap(model.decision_function(test_x), test_y[:, c]))
                sample_maps[s, j] = 100 * np.mean(aps)
        chosen = int(np.argmax(sample_maps.mean(axis=0)))
        at_cost = sample_maps[:, chosen]
        per_k[str(k)] = {"cost": COSTS[chosen], "mean": at_cost.mean(), "min": at_cost.min(), "max": at_cost.max(),
                         "std": at_cost.std(), "sample_maps": at_cost}
        maps[str(k)] = sample_maps
    return per_k, maps, float(np.mean([entry["mean"] for entry in per_k.values()]))


@pytest.fixture(scope="module")
def problem():
    train_x, train_y, test_x, test_y = tiny_problem()
    samples = draw_lowshot_samples(train_y, K_VALUES, NUM_SAMPLES, seed=3)
    return train_x, train_y, test_x, test_y, samples


@pytest.fixture(scope="module")
def reference(problem):
    train_x, _, test_x, test_y, samples = problem
    return reference_lowshot(train_x, test_x, test_y, samples, REFERENCE_SETTINGS)


def assert_same_figures(result, reference, tolerance):
    per_k, maps, track_score = reference
    assert list(result["per_k"]) == [str(k) for k in K_VALUES]
    for k in result["per_k"]:
        np.testing.assert_allclose(result["map_per_cost"][k], maps[k], rtol=0, atol=tolerance)
        entry, expected = result["per_k"][k], per_k[k]
        assert entry["cost"] == expected["cost"] and entry["cost_index"] == COSTS.index(expected["cost"]), k
        for key in ("mean", "min", "max", "std"):
            assert entry[key] == pytest.approx(expected[key], abs=tolerance), (k, key)
        np.testing.assert_allclose(entry["sample_maps"], expected["sample_maps"], rtol=0, atol=tolerance)
    assert result["track_score"] == pytest.approx(track_score, abs=tolerance)


def test_the_reference_problem_exercises_the_cost_choice(reference):
    """Guards the test itself: the costs give different mAPs, and not every k chooses the same cost."""
    per_k, maps, _ = reference
    assert all(np.ptp(maps[k].mean(axis=0)) > 0.1 for k in maps)
    assert all(np.ptp(maps[k], axis=0).max() > 0 for k in maps)  # the samples differ
    assert len({entry["cost"] for entry in per_k.values()}) > 1


def test_liblinear_track_equals_the_scikit_learn_reference(problem, reference):
    train_x, train_y, test_x, test_y, samples = problem
    result = evaluate_lowshot(train_x, train_y, test_x, test_y, samples, COSTS, CLASSES, n_jobs=1,
                              solver="liblinear")
    assert_same_figures(result, reference, 1e-9)


def test_exact_track_equals_the_converged_scikit_learn_reference(problem):
    train_x, train_y, test_x, test_y, samples = problem
    result = evaluate_lowshot(train_x, train_y, test_x, test_y, samples, COSTS, CLASSES, n_jobs=1)
    assert result["solver"] == "newton"
    assert_same_figures(result, reference_lowshot(train_x, test_x, test_y, samples, CONVERGED_SETTINGS), 1e-6)
