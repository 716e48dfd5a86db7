"""Track 2, the workflow stages: draw the VOC07 low-shot samples of one k (once, for every model), the low-shot SVM
on one layer of one model's features for one k, and the merge of a layer's per-k results into its track result."""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

from ..core.devices import select_device
from ..data.feature_files import voc07_split_with_features
from ..core.io import read_json_object, write_json_atomic
from ..core.numerics import start_numerics
from ..evaluation.lowshot import (draw_lowshot_samples, evaluate_lowshot_with_scores, load_lowshot_samples,
                      merge_lowshot_results, merge_lowshot_scores, read_published_lowshot_samples,
                      save_lowshot_samples)
from ..evaluation.svm import protocol_costs, read_test_scores


def draw_voc07_lowshot_samples(draw_options: dict, k: int, published_folder: str, voc07_root: str,
                               classes: Sequence[str], output: str, log: logging.Logger) -> None:
    """The samples of one k: drawn with ``draw_options`` (num_samples, seed), each (k, sample, class) from its own
    random stream, so they are those an all-k draw gives; or read from that k's files of ``published_folder``."""
    from ..data.voc07 import read_voc07_labels, voc07_class_names

    classes = list(classes) or voc07_class_names(voc07_root)
    ids, labels = read_voc07_labels(voc07_root, "trainval", classes)
    num_samples = draw_options["num_samples"]
    if published_folder:  # the challenge's own samples (evaluation.voc07_lowshot.published_samples)
        samples = read_published_lowshot_samples(published_folder, ids, classes, [k], num_samples)
    else:
        samples = draw_lowshot_samples(labels, [k], num_samples, draw_options["seed"])
    samples["image_ids_digest"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    save_lowshot_samples(output, samples)
    log.info("low-shot samples: k=%d x %d samples (%s)", k, num_samples,
             f"published, read from {published_folder}" if published_folder
             else f"drawn with seed {draw_options['seed']}")


def evaluate_voc07_lowshot(trainval_features: str, test_features: str, samples_path: str, layer: str,
                           lowshot_config: dict, voc07_root: str, classes: Sequence[str], output: str, n_jobs: int,
                           log: logging.Logger, scores_output: str | None = None) -> None:
    start_numerics(n_jobs)
    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    samples = load_lowshot_samples(samples_path)
    costs = protocol_costs(lowshot_config["costs"], lowshot_config["extra_powers"])
    result, sample_scores = evaluate_lowshot_with_scores(train_x, train_y, test_x, test_y, samples, costs, classes,
                                                         n_jobs=n_jobs, device=select_device(), log=log.info)
    result.update(layer=layer, dim=int(train_x.shape[1]))
    if scores_output:
        save_lowshot_scores(scores_output, voc07_root, classes, sample_scores)
    write_json_atomic(output, result)
    log.info("layer %s: low-shot track score %.2f", layer, result["track_score"])


def save_lowshot_scores(path: str, voc07_root: str, classes: Sequence[str], sample_scores: dict) -> None:
    """Test decision values at each k's chosen cost, ``k<k>_sample<s>`` (s from 1) [M, C] each, with the test
    image ids and classes, atomically."""
    import numpy as np

    from ..data.voc07 import read_image_set

    arrays = {f"k{k}_sample{index + 1}": scores for k, draws in sample_scores.items()
              for index, scores in enumerate(draws)}
    _write_scores(path, {"image_ids": np.asarray(read_image_set(voc07_root, "test")),
                         "classes": np.asarray(list(classes)), **arrays})


def _write_scores(path: str, arrays: dict) -> None:
    import numpy as np

    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def merge_voc07_lowshot(results: Sequence[str], scores: Sequence[str], k_values: Sequence[int], output: str,
                        scores_output: str, log: logging.Logger) -> None:
    """A layer's low-shot result and test-scores files from its per-k ones (``results`` and ``scores`` in
    ``k_values`` order), as one job over every k would write them."""
    per_k = [read_json_object(path, f"per-k low-shot result {path} does not exist", "a low-shot result",
                              "evaluate_voc07_lowshot (rule svm_lowshot)") for path in results]
    merged = merge_lowshot_results(per_k, k_values)
    _write_scores(scores_output, merge_lowshot_scores([read_test_scores(path) for path in scores]))
    write_json_atomic(output, merged)
    log.info("layer %s: low-shot track score %.2f over k %s", merged["layer"], merged["track_score"], list(k_values))
