"""Low-shot samples (counts, determinism, storage) and the low-shot evaluation (cost choice, track score)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssl_challenge.evaluation.lowshot import (_sample_scores_newton, draw_lowshot_samples, evaluate_lowshot,
                                              evaluate_lowshot_with_scores, load_lowshot_samples, merge_lowshot_results,
                                              merge_lowshot_scores, published_sample_path,
                                              read_published_lowshot_samples, save_lowshot_samples)
from ssl_challenge.evaluation.svm import protocol_costs, training_targets
from ssl_challenge.evaluation.svm_solver import (l2_normalise_rows, scores_from_dual, solve_squared_hinge,
                                                 spectral_basis, with_bias)

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
    assert samples["negatives_per_positive"] == len(CLASSES) - 1
    for k in (1, 2, 4):
        assert len(samples["samples"][str(k)]) == 3
        for draw in samples["samples"][str(k)]:
            for c in range(len(CLASSES)):
                positives, negatives = draw["positives"][c], draw["negatives"][c]
                assert len(positives) == len(set(positives)) == k
                assert len(negatives) == len(set(negatives)) == (len(CLASSES) - 1) * k
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
    labels = label_matrix(rows=200)
    labels[:, 0] = 1
    labels[:5, 0] = -1
    with pytest.raises(ValueError, match=r"k=4: class 0 has 195 positives and 5 non-difficult negatives; "
                                         r"needs 4 and 8"):
        draw_lowshot_samples(labels, [2, 4], 1, seed=0)  # (C - 1) x k = 8 negatives for k = 4
    with pytest.raises(ValueError, match="at least 2 classes"):
        draw_lowshot_samples(label_matrix()[:, :1], [1], 1, seed=0)


@pytest.mark.parametrize("num_classes, ratio", [(20, 19), (10, 9)])
def test_negatives_are_c_minus_one_times_k(num_classes, ratio):
    rng = np.random.default_rng(num_classes)
    labels = np.where(rng.random((600, num_classes)) < 0.1, 1, -1).astype(np.int8)
    samples = draw_lowshot_samples(labels, [2], 1, seed=0)
    assert samples["negatives_per_positive"] == ratio
    assert [len(rows) for rows in samples["samples"]["2"][0]["negatives"]] == [2 * ratio] * num_classes


def test_files_without_a_recorded_ratio_read_as_19k(tmp_path):
    samples = draw_lowshot_samples(label_matrix(), [1], 1, seed=1)
    del samples["negatives_per_positive"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(samples))
    with pytest.raises(ValueError, match=r"old\.json.*negatives must be 19 distinct rows"):
        load_lowshot_samples(path)


def test_save_load_round_trip_and_validation(tmp_path):
    samples = draw_lowshot_samples(label_matrix(), [1, 2], 2, seed=1)
    path = tmp_path / "samples.json"
    save_lowshot_samples(path, samples)
    assert load_lowshot_samples(path) == samples
    broken = json.loads(path.read_text())
    broken["samples"]["2"][1]["negatives"][0] = broken["samples"]["2"][1]["negatives"][0][:3]
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"samples\.json.*k=2 sample 1 class 0"):
        load_lowshot_samples(path)
    (tmp_path / "torn.json").write_text("{")
    with pytest.raises(ValueError, match="torn.json"):
        load_lowshot_samples(tmp_path / "torn.json")


def test_a_samples_file_of_another_format_is_refused_by_name(tmp_path):
    samples = draw_lowshot_samples(label_matrix(), [1], 1, seed=1)
    assert samples["format"] == 1
    for name, value in (("newer", 2), ("unmarked", None)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**samples, "format": value} if value else
                                   {key: item for key, item in samples.items() if key != "format"}))
        with pytest.raises(ValueError, match=rf"{name}\.json: invalid low-shot samples: format {value}, this code "
                                             "reads format 1; delete the file"):
            load_lowshot_samples(path)


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


def test_each_samples_own_basis_solves_the_problems_of_the_trainval_basis():
    """The Newton solver works in the basis of one sample's rows: its test scores are those of each SVM solved
    alone in the basis of all trainval rows (the same primal, up to the solver's 1e-8 gradient tolerance)."""
    labels = label_matrix()
    train_x, test_x, _ = features_for(labels, dim=600)  # more dims than rows: the Gram-matrix branch
    draw = draw_lowshot_samples(labels, [2], 1, seed=5)["samples"]["2"][0]
    costs = [0.01, 1.0, 100.0]
    x_bias, test_bias = (with_bias(l2_normalise_rows(x), "cpu") for x in (train_x, test_x))
    targets = torch.from_numpy(training_targets(labels).astype(np.float64))
    scores, _ = _sample_scores_newton(x_bias, targets, test_bias, draw, costs)
    trainval_basis = spectral_basis(x_bias)
    assert trainval_basis.shape[1] == len(labels)  # 400 rows, against about 20 in the sample
    for c in range(len(CLASSES)):
        rows = torch.tensor(sorted(draw["positives"][c] + draw["negatives"][c]))
        assert len(rows) < 40
        for j, cost in enumerate(costs):
            column = targets[rows, c : c + 1]
            weights = torch.where(column > 0, 2.0, 1.0).double() * cost
            solution = solve_squared_hinge(trainval_basis[rows], column, weights)
            expected = scores_from_dual(x_bias[rows], solution.dual_coefficients, column, test_bias)[:, 0]
            np.testing.assert_allclose(scores[:, c, j], expected.numpy(), rtol=1e-6, atol=1e-9)


def test_evaluation_rejects_samples_of_other_labels():
    labels = label_matrix()
    train_x, test_x, test_y = features_for(labels)
    samples = draw_lowshot_samples(labels, [1], 1, seed=5)
    other = np.where(labels == 1, -1, 1).astype(np.int8)
    with pytest.raises(ValueError, match="disagree with the trainval labels"):
        evaluate_lowshot(train_x, other, test_x, test_y, samples, [1.0], CLASSES, n_jobs=1)


# ------------------------------------------------------------------------------------------------ published samples
IMAGE_IDS = [f"{i:06d}" for i in range(1, 41)]


def write_published(folder, k_values, num_samples, rng_seed=0):
    """A folder in the challenge's format (benchmark encoding: 1 positive, 0 negative, -1 ignored) and the rows
    each file names, to compare with what the reader returns."""
    rng = np.random.default_rng(rng_seed)
    expected = {}
    for k in k_values:
        for sample in range(1, num_samples + 1):
            targets = {image_id: {name: -1 for name in CLASSES} for image_id in IMAGE_IDS}
            rows = {"positives": [], "negatives": []}
            for name in CLASSES:
                chosen = rng.choice(len(IMAGE_IDS), k * len(CLASSES), replace=False)
                positives, negatives = sorted(chosen[:k].tolist()), sorted(chosen[k:].tolist())
                for row in positives:
                    targets[IMAGE_IDS[row]][name] = 1
                for row in negatives:
                    targets[IMAGE_IDS[row]][name] = 0
                rows["positives"].append(positives)
                rows["negatives"].append(negatives)
            published_sample_path(folder, sample, k).write_text(json.dumps(targets))
            expected[(k, sample)] = rows
    return expected


def test_published_samples_become_rows_of_the_trainval_features(tmp_path):
    expected = write_published(tmp_path, [1, 2], num_samples=3)
    assert (tmp_path / "train_targets_sample3_k2.json").is_file()
    samples = read_published_lowshot_samples(tmp_path, IMAGE_IDS, CLASSES, [1, 2], num_samples=3)
    assert samples["seed"] is None and str(tmp_path) in samples["source"]
    assert samples["negatives_per_positive"] == 2 and samples["num_images"] == 40 and samples["num_classes"] == 3
    for k in (1, 2):
        for sample in (1, 2, 3):
            assert samples["samples"][str(k)][sample - 1] == expected[(k, sample)]
    save_lowshot_samples(tmp_path / "as_ours.json", samples)  # the structure the evaluation reads
    assert load_lowshot_samples(tmp_path / "as_ours.json") == samples
    # rows follow the order of the image ids given, not of the file
    reordered = IMAGE_IDS[::-1]
    again = read_published_lowshot_samples(tmp_path, reordered, CLASSES, [1], num_samples=1)
    assert again["samples"]["1"][0]["positives"] == [[39 - row for row in rows]
                                                     for rows in expected[(1, 1)]["positives"]]


def test_published_samples_errors_name_the_file(tmp_path):
    write_published(tmp_path, [1], num_samples=2)
    with pytest.raises(FileNotFoundError, match="train_targets_sample3_k1.json does not exist"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS, CLASSES, [1], num_samples=3)
    with pytest.raises(ValueError, match=r"sample1_k1.json: image '000040' is not a trainval image"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS[:39], CLASSES, [1], num_samples=2)
    with pytest.raises(ValueError, match=r"sample1_k1.json: image '000001': unknown class 'dog'"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS, ["cat", "horse", "bus"], [1], num_samples=2)
    path = published_sample_path(tmp_path, 2, 1)
    targets = json.loads(path.read_text())
    targets["000001"]["cat"] = 2
    path.write_text(json.dumps(targets))
    with pytest.raises(ValueError, match=r"sample2_k1.json: image '000001', class 'cat': label 2"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS, CLASSES, [1], num_samples=2)
    # VOC's encoding (-1 negative, 0 ignored) instead of the benchmark's: the counts give it away
    voc_encoded = {image: {name: {1: 1, 0: -1, -1: 0}[label] for name, label in labels.items()}
                   for image, labels in json.loads(published_sample_path(tmp_path, 1, 1).read_text()).items()}
    path.write_text(json.dumps(voc_encoded))
    with pytest.raises(ValueError, match=r"sample2_k1.json: class 'cat' has 1 positives \(1\) and 37 negatives "
                                         r"\(0\); expected 1 and 2.*1 positive, 0 negative, -1 ignored"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS, CLASSES, [1], num_samples=2)
    path.write_text('{"000001": {"cat": 1,}')
    with pytest.raises(ValueError, match=r"sample2_k1.json:1: not valid JSON"):
        read_published_lowshot_samples(tmp_path, IMAGE_IDS, CLASSES, [1], num_samples=2)


# ------------------------------------------------------------------------------------------------ one job per k
def one_k_result(k, mean, seconds, newton_steps, layer="feat5"):
    """A hand-made per-k result (the shape of evaluate_lowshot on one k's samples, with layer and dim)."""
    return {"track_score": mean, "per_k": {str(k): {"mean": mean, "cost": 1.0}},
            "map_per_cost": {str(k): [[mean - 1.0], [mean + 1.0]]}, "costs": [1.0], "solver": "newton",
            "cost_choice": "best test", "std": "ddof 0", "seed": 3, "num_samples": 2, "seconds": seconds,
            "solver_stats": {"newton_steps": newton_steps, "not_converged": 0}, "numerics": {"cpu": "x"},
            "layer": layer, "dim": 8}


def test_merging_per_k_results_gives_the_all_k_result():
    merged = merge_lowshot_results([one_k_result(8, 30.0, 2.5, 4), one_k_result(1, 10.0, 1.0, 3)], [8, 1])
    assert merged["track_score"] == 20.0  # the mean over k of the per-k means
    assert list(merged["per_k"]) == ["8", "1"] and merged["per_k"]["1"] == {"mean": 10.0, "cost": 1.0}
    assert merged["map_per_cost"] == {"8": [[29.0], [31.0]], "1": [[9.0], [11.0]]}
    assert merged["seconds"] == 3.5 and merged["solver_stats"] == {"newton_steps": 7, "not_converged": 0}
    assert (merged["layer"], merged["dim"], merged["seed"], merged["costs"]) == ("feat5", 8, 3, [1.0])
    assert list(merged) == list(evaluate_lowshot_keys())
    with pytest.raises(ValueError, match="given for k=2 holds k \\['1'\\]"):
        merge_lowshot_results([one_k_result(1, 10.0, 1.0, 3)], [2])
    with pytest.raises(ValueError, match="k=2 has layer 'feat4'"):
        merge_lowshot_results([one_k_result(1, 10.0, 1.0, 3), one_k_result(2, 1.0, 1.0, 1, "feat4")], [1, 2])
    with pytest.raises(ValueError, match="1 per-k results for k_values \\[1, 2\\]"):
        merge_lowshot_results([one_k_result(1, 10.0, 1.0, 3)], [1, 2])


def evaluate_lowshot_keys():
    """The keys of a layer's result file as one job over every k writes them (evaluate_lowshot, layer, dim)."""
    return ("track_score", "per_k", "map_per_cost", "costs", "solver", "cost_choice", "std", "seed", "num_samples",
            "seconds", "solver_stats", "numerics", "layer", "dim")


def test_merging_per_k_scores_keeps_images_classes_then_each_ks_arrays():
    ids, classes = np.array(["000001", "000002"]), np.array(["cat", "dog"])
    k2 = {"image_ids": ids, "classes": classes, "k2_sample1": np.ones((2, 2)), "k2_sample2": np.zeros((2, 2))}
    k1 = {"image_ids": ids, "classes": classes, "k1_sample1": np.full((2, 2), 3.0)}
    merged = merge_lowshot_scores([k2, k1])
    assert list(merged) == ["image_ids", "classes", "k2_sample1", "k2_sample2", "k1_sample1"]
    assert merged["k1_sample1"][0, 0] == 3.0 and merged["k2_sample2"].sum() == 0
    with pytest.raises(ValueError, match="scores file 2 has other image_ids"):
        merge_lowshot_scores([k2, {**k1, "image_ids": ids[::-1]}])


def test_evaluating_each_k_alone_and_merging_is_bit_identical_to_one_all_k_job():
    labels = label_matrix()
    train_x, test_x, test_y = features_for(labels)
    samples = draw_lowshot_samples(labels, [2, 1], 2, seed=5)
    costs = [0.1, 1.0]
    whole, whole_scores = evaluate_lowshot_with_scores(train_x, labels, test_x, test_y, samples, costs, CLASSES, 1)
    per_k, per_k_scores = [], []
    for k in (2, 1):
        alone = draw_lowshot_samples(labels, [k], 2, seed=5)
        result, scores = evaluate_lowshot_with_scores(train_x, labels, test_x, test_y, alone, costs, CLASSES, 1)
        per_k.append({**result, "layer": "feat5", "dim": 12})
        per_k_scores.append({"image_ids": np.arange(3), "classes": np.asarray(CLASSES),
                             **{f"k{k}_sample{index + 1}": array for index, array in enumerate(scores[str(k)])}})
    merged = merge_lowshot_results(per_k, [2, 1])
    whole.update(layer="feat5", dim=12)
    assert json.dumps({**merged, "seconds": 0}) == json.dumps({**whole, "seconds": 0})  # same keys, same order
    arrays = merge_lowshot_scores(per_k_scores)
    assert list(arrays)[2:] == ["k2_sample1", "k2_sample2", "k1_sample1", "k1_sample2"]
    for k in ("2", "1"):
        for index, array in enumerate(whole_scores[k]):
            assert np.array_equal(arrays[f"k{k}_sample{index + 1}"], array)


def test_progress_lines_count_the_samples_done():
    labels = label_matrix()
    train_x, test_x, test_y = features_for(labels)
    samples = draw_lowshot_samples(labels, [2, 1], 2, seed=5)
    lines = []
    quiet, _ = evaluate_lowshot_with_scores(train_x, labels, test_x, test_y, samples, [0.1, 1.0], CLASSES, 1)
    logged, _ = evaluate_lowshot_with_scores(train_x, labels, test_x, test_y, samples, [0.1, 1.0], CLASSES, 1,
                                             log=lines.append)
    assert {**logged, "seconds": 0} == {**quiet, "seconds": 0}  # reporting changes nothing
    each = f"{len(CLASSES)} classes x 2 costs each"
    assert lines == [f"low-shot: {done}/4 samples done (k {k}, {each})" for done, k in ((1, 2), (2, 2), (3, 1), (4, 1))]
