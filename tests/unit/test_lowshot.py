"""Low-shot samples (counts, determinism, storage) and the low-shot evaluation (cost choice, track score)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssl_challenge.evaluation.lowshot import (draw_lowshot_samples, evaluate_lowshot, load_lowshot_samples,
                                              save_lowshot_samples)
from ssl_challenge.evaluation.svm import protocol_costs

torch.set_num_threads(1)
CLASSES = ["cat", "dog", "bus"]


def label_matrix(rows=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((rows, len(CLASSES))) < 0.25, 1, -1).astype(np.int8)
    labels[rng.random(labels.shape) < 0.1] = 0
    return labels


def test_counts_disjoint_non_difficult():
    labels = label_matrix()
    samples = draw_lowshot_samples(labels, [1, 2, 4], num_samples=3, seed=7)
    assert samples["seed"] == 7 and samples["k_values"] == [1, 2, 4] and samples["num_samples"] == 3
    for k in (1, 2, 4):
        assert len(samples["samples"][str(k)]) == 3
        for draw in samples["samples"][str(k)]:
            for c in range(len(CLASSES)):
                positives, negatives = draw["positives"][c], draw["negatives"][c]
                assert len(positives) == len(set(positives)) == k
                assert len(negatives) == len(set(negatives)) == 19 * k
                assert not set(positives) & set(negatives)
                assert (labels[positives, c] == 1).all() and (labels[negatives, c] == -1).all()


def test_deterministic_in_seed():
    labels = label_matrix()
    first = draw_lowshot_samples(labels, [1, 4], 2, seed=3)
    assert first == draw_lowshot_samples(labels, [1, 4], 2, seed=3)
    assert first["samples"] != draw_lowshot_samples(labels, [1, 4], 2, seed=4)["samples"]
    # samples of one k do not depend on which other k are drawn; different samples differ
    assert draw_lowshot_samples(labels, [4], 2, seed=3)["samples"]["4"] == first["samples"]["4"]
    assert first["samples"]["4"][0] != first["samples"]["4"][1]


def test_too_few_images_names_class_and_k():
    labels = label_matrix(rows=200)
    labels[:, 1] = -1
    labels[:3, 1] = 1
    with pytest.raises(ValueError, match=r"k=4: class 1 has 3 positives"):
        draw_lowshot_samples(labels, [1, 4], 1, seed=0)
    with pytest.raises(ValueError, match="k=8"):
        draw_lowshot_samples(label_matrix(rows=100), [8], 1, seed=0)  # 152 negatives needed


def test_save_load_round_trip_and_validation(tmp_path):
    samples = draw_lowshot_samples(label_matrix(), [1, 2], 2, seed=1)
    path = tmp_path / "samples.json"
    save_lowshot_samples(path, samples)
    assert load_lowshot_samples(path) == samples
    broken = json.loads(path.read_text())
    broken["samples"]["2"][1]["negatives"][0] = broken["samples"]["2"][1]["negatives"][0][:5]
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"samples\.json.*k=2 sample 1 class 0"):
        load_lowshot_samples(path)
    (tmp_path / "torn.json").write_text("{")
    with pytest.raises(ValueError, match="torn.json"):
        load_lowshot_samples(tmp_path / "torn.json")


def features_for(labels, rows_test=150, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    signatures = rng.normal(size=(len(CLASSES), dim))
    train_x = np.maximum((labels > 0) @ signatures * 0.7 + rng.normal(size=(len(labels), dim)) + 0.3, 0)
    test_y = np.where(rng.random((rows_test, len(CLASSES))) < 0.25, 1, -1).astype(np.int8)
    test_y[rng.random(test_y.shape) < 0.05] = 0
    test_x = np.maximum((test_y > 0) @ signatures * 0.7 + rng.normal(size=(rows_test, dim)) + 0.3, 0)
    return train_x, test_x, test_y


def test_evaluation_cost_choice_track_score_and_solver_agreement():
    labels = label_matrix()
    train_x, test_x, test_y = features_for(labels)
    samples = draw_lowshot_samples(labels, [1, 2], 3, seed=5)
    costs = protocol_costs([1.0], extra_powers=True)[::3]  # a spread of costs keeps the test quick
    fast = evaluate_lowshot(train_x, labels, test_x, test_y, samples, costs, CLASSES, n_jobs=1)
    base = evaluate_lowshot(train_x, labels, test_x, test_y, samples, costs, CLASSES, n_jobs=1, solver="liblinear")
    for result in (fast, base):
        for k in ("1", "2"):
            per_cost = np.asarray(result["map_per_cost"][k])
            assert per_cost.shape == (3, len(costs))
            chosen = int(np.argmax(per_cost.mean(axis=0)))
            entry = result["per_k"][k]
            assert entry["cost"] == costs[chosen] and entry["cost_index"] == chosen
            assert entry["mean"] == pytest.approx(per_cost[:, chosen].mean())
            assert entry["min"] == pytest.approx(per_cost[:, chosen].min())
            assert entry["max"] == pytest.approx(per_cost[:, chosen].max())
            assert entry["std"] == pytest.approx(per_cost[:, chosen].std())
        assert result["track_score"] == pytest.approx(np.mean([result["per_k"][k]["mean"] for k in ("1", "2")]))
        assert "TEST mAP" in result["cost_choice"]
    np.testing.assert_allclose(np.asarray(fast["map_per_cost"]["2"]), np.asarray(base["map_per_cost"]["2"]),
                               atol=0.05)
    assert abs(fast["track_score"] - base["track_score"]) <= 0.05


def test_evaluation_rejects_samples_of_other_labels():
    labels = label_matrix()
    train_x, test_x, test_y = features_for(labels)
    samples = draw_lowshot_samples(labels, [1], 1, seed=5)
    other = np.where(labels == 1, -1, 1).astype(np.int8)
    with pytest.raises(ValueError, match="disagree with the trainval labels"):
        evaluate_lowshot(train_x, other, test_x, test_y, samples, [1.0], CLASSES, n_jobs=1)
