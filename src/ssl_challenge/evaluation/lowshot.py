"""Track 2: the VOC07 low-shot SVM protocol.

For every k and every sample, each class gets its own training set: k positives and (C - 1) x k negatives (C the
number of classes: 19k on VOC07's 20, as the FAIR benchmark's sampling script draws them) drawn without
replacement from the trainval images that are not difficult for that class; every other image is ignored for that
class. The challenge's own published samples can be read instead (:func:`read_published_lowshot_samples`). The
SVMs are those of the full protocol (:mod:`.svm_solver`: same loss, class weights, bias), trained at every cost
without cross-validation, and scored on the test split (difficult images excluded per class).

Following the reference, the cost of each k is the one with the best mean-over-samples *test* mAP (so the figure
is optimistic; the output says so). Reported per k: mean, min, max and std (population, ddof 0) of the samples'
mAPs at that cost; the track score is the mean over k of the per-k means. All figures x100.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..core.finite import require_finite
from ..core.io import read_json_object, write_json_atomic
from ..core.numerics import numerics_record
from ..core.threads import torch_threads
from .svm import SOLVERS, test_average_precision, training_targets
from .svm_solver import (CLASS_WEIGHT, fit_liblinear, l2_normalise_rows, scores_from_dual, solve_squared_hinge,
                         spectral_basis, with_bias)

LEGACY_NEGATIVES_PER_POSITIVE = 19  # samples files written before the ratio was recorded drew 19k
SAMPLES_FORMAT = 1


def draw_lowshot_samples(labels: np.ndarray, k_values: Sequence[int], num_samples: int, seed: int) -> dict:
    """Draw the low-shot training sets from the trainval label matrix ``labels`` int8 [N, C] (1 / -1 / 0).

    Returns a JSON-able dict: ``seed``, ``k_values``, ``num_samples``, ``num_images``, ``num_classes``,
    ``negatives_per_positive`` (C - 1, C = the number of classes) and ``samples`` {str(k): [ {"positives": [[row,
    ...] per class], "negatives": [[row, ...] per class]} per sample ]}, rows sorted. The draw of (k, sample, class)
    comes from its own random stream seeded by (seed, k, sample, class), so it does not depend on the other k values
    asked for. Raises ``ValueError`` naming the class and k when a class has fewer than k positives or (C - 1) x k
    negatives (no clamping), and when there are fewer than 2 classes (no negatives to draw).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"low-shot labels must be [images, classes], got shape {labels.shape}")
    k_values = [int(k) for k in k_values]
    if not k_values or min(k_values) < 1 or len(set(k_values)) != len(k_values):
        raise ValueError(f"low-shot k_values must be distinct positive integers, got {k_values}")
    if int(num_samples) < 1:
        raise ValueError(f"low-shot num_samples must be >= 1, got {num_samples}")
    if labels.shape[1] < 2:
        raise ValueError(f"low-shot samples need at least 2 classes ((C - 1) x k negatives), got {labels.shape[1]}")
    ratio = labels.shape[1] - 1
    positives = [np.flatnonzero(labels[:, c] > 0) for c in range(labels.shape[1])]
    negatives = [np.flatnonzero(labels[:, c] < 0) for c in range(labels.shape[1])]
    drawn = {}
    for k in k_values:
        for c in range(labels.shape[1]):
            if positives[c].size < k or negatives[c].size < ratio * k:
                raise ValueError(f"low-shot k={k}: class {c} has {positives[c].size} positives and "
                                 f"{negatives[c].size} non-difficult negatives; needs {k} and {ratio * k}")
        drawn[str(k)] = [_draw_one_sample(positives, negatives, k, ratio, sample, int(seed))
                         for sample in range(int(num_samples))]
    return {"format": SAMPLES_FORMAT, "seed": int(seed), "k_values": k_values, "num_samples": int(num_samples),
            "num_images": int(labels.shape[0]), "num_classes": int(labels.shape[1]),
            "negatives_per_positive": ratio, "samples": drawn}


def _draw_one_sample(positives, negatives, k, ratio, sample, seed) -> dict:
    chosen = {"positives": [], "negatives": []}
    for c, (class_positives, class_negatives) in enumerate(zip(positives, negatives)):
        generator = np.random.default_rng([seed, k, sample, c])
        chosen["positives"].append(sorted(generator.choice(class_positives, k, replace=False).tolist()))
        chosen["negatives"].append(sorted(generator.choice(class_negatives, ratio * k, replace=False).tolist()))
    return chosen


SAMPLES_WRITER = "save_lowshot_samples (rule lowshot_samples)"


def save_lowshot_samples(path: str | Path, samples: dict) -> None:
    """Write the samples as JSON, atomically."""
    _check_samples(samples, str(path))
    write_json_atomic(path, samples)


def load_lowshot_samples(path: str | Path) -> dict:
    """Read samples written by :func:`save_lowshot_samples` (the format's one reader); errors name the file and what
    is wrong: a truncated or damaged file raises :class:`~ssl_challenge.core.io.CorruptFileError` naming its writer."""
    samples = read_json_object(path, f"{path}: low-shot samples not found; they are written by {SAMPLES_WRITER}",
                               "(low-shot samples)", SAMPLES_WRITER)
    _check_samples(samples, str(path))
    return samples


def _check_samples(samples: dict, source: str) -> None:
    def fail(problem):
        raise ValueError(f"{source}: invalid low-shot samples: {problem}")

    if not isinstance(samples, dict):
        fail("not a JSON object")
    if samples.get("format") != SAMPLES_FORMAT:
        fail(f"format {samples.get('format')!r}, this code reads format {SAMPLES_FORMAT}; delete the file to "
             "draw the samples again")
    for key in ("seed", "k_values", "num_samples", "num_images", "num_classes", "samples"):
        if key not in samples:
            fail(f"missing key {key!r}")
    num_classes, num_images = samples["num_classes"], samples["num_images"]
    ratio = samples.get("negatives_per_positive", LEGACY_NEGATIVES_PER_POSITIVE)
    if not isinstance(ratio, int) or ratio < 1:
        fail(f"negatives_per_positive must be a positive integer, got {ratio!r}")
    if sorted(samples["samples"]) != sorted(str(k) for k in samples["k_values"]):
        fail(f"samples for k {sorted(samples['samples'])} but k_values {samples['k_values']}")
    for k in samples["k_values"]:
        draws = samples["samples"][str(k)]
        if not isinstance(draws, list) or len(draws) != samples["num_samples"]:
            fail(f"k={k}: expected {samples['num_samples']} samples")
        for index, draw in enumerate(draws):
            for part, size in (("positives", k), ("negatives", ratio * k)):
                rows = draw.get(part) if isinstance(draw, dict) else None
                if not isinstance(rows, list) or len(rows) != num_classes:
                    fail(f"k={k} sample {index}: {part!r} must list {num_classes} classes")
                for c, class_rows in enumerate(rows):
                    if (not isinstance(class_rows, list) or len(class_rows) != size
                            or len(set(class_rows)) != size
                            or not all(isinstance(row, int) and 0 <= row < num_images for row in class_rows)):
                        fail(f"k={k} sample {index} class {c}: {part} must be {size} distinct rows "
                             f"in [0, {num_images})")


# ------------------------------------------------------------------------------------------------ published samples
PUBLISHED_SAMPLE_NAME = "train_targets_sample{sample}_k{k}.json"
# The FAIR benchmark's target encoding (extra_scripts/create_voc_data_files.py), not VOC's: 1 positive,
# 0 negative, -1 ignored. Its challenge sampler starts from all -1 and writes 1 / 0 on the drawn images.
PUBLISHED_POSITIVE, PUBLISHED_NEGATIVE, PUBLISHED_IGNORED = 1, 0, -1


def published_sample_path(folder: str | Path, sample: int, k: int) -> Path:
    """``<folder>/train_targets_sample<sample>_k<k>.json``, ``sample`` counted from 1 as the challenge names them."""
    return Path(folder) / PUBLISHED_SAMPLE_NAME.format(sample=sample, k=k)


def read_published_lowshot_samples(folder: str | Path, image_ids: Sequence[str], classes: Sequence[str],
                                   k_values: Sequence[int], num_samples: int = 5) -> dict:
    """The challenge's published low-shot samples (iccv_challenge/low_shot_voc07/low_shot_train/) as the samples
    structure of :func:`draw_lowshot_samples`, rows indexing ``image_ids`` (the trainval rows, in feature order).

    Each ``train_targets_sample{1..num_samples}_k{k}.json`` is {image id: {class: 1 | 0 | -1}} in the benchmark's
    encoding: 1 positive, 0 negative, -1 ignored (an image or class left out of a file is ignored too). Every class
    must have exactly k positives and (C - 1) x k negatives, as the challenge's sampler draws them. ``seed`` is None
    and ``source`` names the folder. Errors name the file: a missing file, an unknown image id or class, a label
    outside {1, 0, -1}, wrong counts (the message recalls the encoding, a VOC-encoded file fails there).
    """
    k_values = [int(k) for k in k_values]
    if len(classes) < 2:
        raise ValueError(f"published low-shot samples need at least 2 classes, got {list(classes)}")
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    column_of = {name: column for column, name in enumerate(classes)}
    ratio = len(classes) - 1
    drawn = {}
    for k in k_values:
        drawn[str(k)] = []
        for sample in range(1, int(num_samples) + 1):
            path = published_sample_path(folder, sample, k)
            draw = _read_published_file(path, row_of, column_of)
            for column, name in enumerate(classes):
                found = (len(draw["positives"][column]), len(draw["negatives"][column]))
                if found != (k, ratio * k):
                    raise ValueError(f"{path}: class {name!r} has {found[0]} positives (1) and {found[1]} negatives "
                                     f"(0); expected {k} and {ratio * k} = (C - 1) x k with C = {len(classes)}. The "
                                     "file must use the benchmark's encoding (1 positive, 0 negative, -1 ignored) "
                                     "and the same classes")
            drawn[str(k)].append(draw)
    samples = {"format": SAMPLES_FORMAT, "seed": None, "source": f"published samples in {folder}",
               "k_values": k_values, "num_samples": int(num_samples), "num_images": len(image_ids),
               "num_classes": len(classes), "negatives_per_positive": ratio, "samples": drawn}
    _check_samples(samples, str(folder))
    return samples


def _read_published_file(path: Path, row_of: dict, column_of: dict) -> dict:
    targets = read_json_object(path, f"published low-shot sample {path} does not exist; expected files "
                               f"{PUBLISHED_SAMPLE_NAME} for every sample and k", "{image id: {class: 1 | 0 | -1}}")
    positives = [[] for _ in column_of]
    negatives = [[] for _ in column_of]
    for image_id, labels in targets.items():
        if image_id not in row_of:
            raise ValueError(f"{path}: image {image_id!r} is not a trainval image of the VOC07 root in use")
        if not isinstance(labels, dict):
            raise ValueError(f"{path}: image {image_id!r}: expected {{class: 1 | 0 | -1}}, got {labels!r}")
        for name, label in labels.items():
            if name not in column_of:
                raise ValueError(f"{path}: image {image_id!r}: unknown class {name!r}; classes are "
                                 f"{list(column_of)}")
            if type(label) is not int or label not in (PUBLISHED_POSITIVE, PUBLISHED_NEGATIVE, PUBLISHED_IGNORED):
                raise ValueError(f"{path}: image {image_id!r}, class {name!r}: label {label!r}; expected 1 "
                                 "(positive), 0 (negative) or -1 (ignored)")
            if label == PUBLISHED_POSITIVE:
                positives[column_of[name]].append(row_of[image_id])
            elif label == PUBLISHED_NEGATIVE:
                negatives[column_of[name]].append(row_of[image_id])
    return {"positives": [sorted(rows) for rows in positives], "negatives": [sorted(rows) for rows in negatives]}


def _check_against_labels(samples: dict, train_y: np.ndarray, classes: Sequence[str]) -> None:
    if samples["num_classes"] != len(classes) or samples["num_images"] != train_y.shape[0]:
        raise ValueError(f"low-shot samples drawn for {samples['num_images']} images x {samples['num_classes']} "
                         f"classes, but the labels are {train_y.shape[0]} x {len(classes)}")
    for k in samples["k_values"]:
        for draw in samples["samples"][str(k)]:
            for c, name in enumerate(classes):
                if not ((train_y[draw["positives"][c], c] > 0).all() and (train_y[draw["negatives"][c], c] < 0).all()):
                    raise ValueError(f"low-shot samples k={k}, class {name!r}: drawn rows disagree with the "
                                     "trainval labels (samples from another label set?)")


# ------------------------------------------------------------------------------------------------ evaluation
def _sample_scores_newton(x_bias, train_targets, test_bias, draw, costs):
    """Test decision values [M, C, costs] of one sample's SVMs (every class, every cost). The basis is that of the
    sample's own rows, not of every trainval row: the same problems, with a smaller Gram eigendecomposition (on the
    embedded default 96 to 1057 rows for k = 1 to 16 instead of 1600: over a layer's five k, 35% of the work)."""
    import torch

    num_classes, device = train_targets.shape[1], x_bias.device
    rows = sorted(set().union(*draw["positives"], *draw["negatives"]))
    rows_tensor = torch.tensor(rows, device=device)
    position = {row: index for index, row in enumerate(rows)}
    member = torch.zeros(len(rows), num_classes, dtype=torch.float64, device=device)
    for c in range(num_classes):
        member[[position[row] for row in draw["positives"][c] + draw["negatives"][c]], c] = 1.0
    targets = train_targets[rows_tensor]
    class_weight = torch.where(targets > 0, CLASS_WEIGHT[1], CLASS_WEIGHT[-1]) * member
    cost_tensor = torch.tensor(costs, dtype=torch.float64, device=device)
    weights = (class_weight[:, :, None] * cost_tensor).reshape(len(rows), -1)
    column_targets = targets[:, :, None].expand(-1, -1, len(costs)).reshape(len(rows), -1)
    basis, gram = spectral_basis(x_bias[rows_tensor], return_gram=True)
    solution = solve_squared_hinge(basis, column_targets, weights, gram=gram)
    scores = scores_from_dual(x_bias[rows_tensor], solution.dual_coefficients, column_targets, test_bias)
    scores = scores.reshape(-1, num_classes, len(costs))
    return scores.cpu().numpy(), solution.stats


def _sample_scores_liblinear(train_x, train_targets, test_x, draw, costs):
    scores = np.empty((test_x.shape[0], train_targets.shape[1], len(costs)))
    not_converged = 0
    for c in range(train_targets.shape[1]):
        rows = np.array(sorted(draw["positives"][c] + draw["negatives"][c]))
        for j, cost in enumerate(costs):
            model, converged = fit_liblinear(train_x[rows], train_targets[rows, c], cost)
            scores[:, c, j] = model.decision_function(test_x)
            not_converged += not converged
    return scores, {"liblinear_not_converged": not_converged}


def _map_per_cost(scores: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """mAP x100 per cost from test scores [M, C, costs]."""
    ap = [[test_average_precision(scores[:, c, j], test_y[:, c]) for j in range(scores.shape[2])]
          for c in range(scores.shape[1])]
    return 100.0 * np.mean(ap, axis=0)


def evaluate_lowshot(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                     samples: dict, costs: list[float], classes: list[str], n_jobs: int, solver: str = "auto",
                     device=None) -> dict:
    """The low-shot track for one layer. Shapes as :func:`.svm.train_and_test_full_svm`; ``samples`` from
    :func:`draw_lowshot_samples`. Returns a JSON-able dict with ``track_score``, ``per_k`` {str(k): {mean, min, max,
    std, cost, cost_index, sample_maps}}, ``map_per_cost`` {str(k): [[mAP per cost] per sample]} and settings."""
    return evaluate_lowshot_with_scores(train_x, train_y, test_x, test_y, samples, costs, classes, n_jobs, solver,
                                        device)[0]


def evaluate_lowshot_with_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                                 samples: dict, costs: list[float], classes: list[str], n_jobs: int,
                                 solver: str = "auto", device=None, log: Callable[[str], None] | None = None
                                 ) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """:func:`evaluate_lowshot`'s report and the test decision values at each k's chosen cost: {str(k): [float64
    [M, C] per sample]} (the challenge's low-shot submission files are written from them). ``log`` receives one
    progress line per sample done."""
    if solver not in SOLVERS:
        raise ValueError(f"low-shot solver must be one of {SOLVERS}, got {solver!r}")
    solver = "newton" if solver == "auto" else solver
    costs = [float(cost) for cost in costs]
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_against_labels(samples, train_y, classes)
    require_finite(train_x, "low-shot: trainval features")
    require_finite(test_x, "low-shot: test features")
    if test_y.shape[1] != len(classes) or test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"low-shot: test labels {test_y.shape} / features {test_x.shape} do not match "
                         f"{len(classes)} classes and {train_x.shape[1]} dims")
    start = time.perf_counter()
    train_x, test_x = l2_normalise_rows(train_x), l2_normalise_rows(test_x)
    train_targets = training_targets(train_y)  # only drawn rows are used; none is difficult
    map_per_cost, stats, sample_scores = {}, {}, {}
    done, total = 0, sum(len(samples["samples"][str(k)]) for k in samples["k_values"])
    with torch_threads(n_jobs):
        if solver == "newton":
            import torch

            device = torch.device(device or "cpu")
            x_bias, test_bias = with_bias(train_x, device), with_bias(test_x, device)
            targets = torch.from_numpy(train_targets.astype(np.float64)).to(device)
        for k in samples["k_values"]:
            map_per_cost[str(k)] = []
            for draw in samples["samples"][str(k)]:
                if solver == "newton":
                    scores, sample_stats = _sample_scores_newton(x_bias, targets, test_bias, draw, costs)
                else:
                    scores, sample_stats = _sample_scores_liblinear(train_x, train_targets, test_x, draw, costs)
                for key, value in sample_stats.items():
                    stats[key] = stats.get(key, 0) + value
                map_per_cost[str(k)].append(_map_per_cost(scores, test_y).tolist())
                sample_scores.setdefault(str(k), []).append(scores)
                if log is not None:
                    done += 1
                    log(f"low-shot: {done}/{total} samples done (k {k}, {len(classes)} classes x {len(costs)} "
                        "costs each)")
    per_k = {}
    for k, sample_maps in map_per_cost.items():
        sample_maps = np.asarray(sample_maps)
        chosen = int(np.argmax(sample_maps.mean(axis=0)))  # ties -> first in costs order
        at_cost = sample_maps[:, chosen]
        per_k[k] = {"mean": float(at_cost.mean()), "min": float(at_cost.min()), "max": float(at_cost.max()),
                    "std": float(at_cost.std()), "cost": costs[chosen], "cost_index": chosen,
                    "sample_maps": at_cost.tolist()}
        sample_scores[k] = [np.asarray(scores[:, :, chosen], dtype=np.float64) for scores in sample_scores[k]]
    return {
        "track_score": track_score(per_k),
        "per_k": per_k,
        "map_per_cost": map_per_cost,
        "costs": costs,
        "solver": solver,
        "cost_choice": "per k, the cost with the best mean-over-samples TEST mAP (as the reference does); "
                       "ties -> first in costs order",
        "std": "population standard deviation over samples (ddof 0)",
        "seed": samples["seed"],
        "num_samples": samples["num_samples"],
        "seconds": time.perf_counter() - start,
        "solver_stats": stats,
        "numerics": numerics_record(),
    }, sample_scores


def track_score(per_k: Mapping[str, Mapping[str, float]]) -> float:
    """The low-shot track score: the mean over k of the per-k mean mAPs (``per_k`` {str(k): {"mean": ...}})."""
    return float(np.mean([entry["mean"] for entry in per_k.values()]))


# ------------------------------------------------------------------------------------------------ one job per k
# The keys every k's result shares (settings and the draw); the merge checks them equal.
SHARED_RESULT_KEYS = ("costs", "solver", "cost_choice", "std", "seed", "num_samples")


def merge_lowshot_results(results: Sequence[dict], k_values: Sequence[int]) -> dict:
    """One layer's low-shot result from its per-k results (each :func:`evaluate_lowshot` on one k's samples, with
    ``layer`` and ``dim``), in ``k_values`` order: the report all k evaluated at once would give, key for key
    (``seconds`` and ``solver_stats`` summed, ``numerics`` of the first k). Raises ``ValueError`` naming the k whose
    result does not hold exactly that k or differs from the first in a shared setting."""
    if len(results) != len(k_values) or not results:
        raise ValueError(f"low-shot merge: {len(results)} per-k results for k_values {list(k_values)}")
    first = results[0]
    per_k, map_per_cost, stats = {}, {}, {}
    for k, result in zip(k_values, results):
        if list(result["per_k"]) != [str(k)]:
            raise ValueError(f"low-shot merge: the result given for k={k} holds k {list(result['per_k'])}")
        for key in SHARED_RESULT_KEYS + ("layer", "dim"):
            if result[key] != first[key]:
                raise ValueError(f"low-shot merge: k={k} has {key} {result[key]!r}, k={k_values[0]} has "
                                 f"{first[key]!r} (results of different runs?)")
        per_k[str(k)] = result["per_k"][str(k)]
        map_per_cost[str(k)] = result["map_per_cost"][str(k)]
        for key, value in result["solver_stats"].items():
            stats[key] = stats.get(key, 0) + value
    return {"track_score": track_score(per_k), "per_k": per_k,
            "map_per_cost": map_per_cost, **{key: first[key] for key in SHARED_RESULT_KEYS},
            "seconds": sum(result["seconds"] for result in results), "solver_stats": stats,
            "numerics": first["numerics"], "layer": first["layer"], "dim": first["dim"]}


def merge_lowshot_scores(scores: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of one layer's test-scores file from its per-k files (``image_ids``, ``classes``, then each k's
    ``k<k>_sample<s>`` in the order given). Raises ``ValueError`` when the files disagree on the images or classes."""
    merged = {"image_ids": scores[0]["image_ids"], "classes": scores[0]["classes"]}
    for index, arrays in enumerate(scores):
        for key in ("image_ids", "classes"):
            if not np.array_equal(arrays[key], merged[key]):
                raise ValueError(f"low-shot merge: per-k scores file {index + 1} has other {key} than the first")
        merged.update((key, value) for key, value in arrays.items() if key not in merged)
    return merged
