"""Track 2, the workflow stages: draw the VOC07 low-shot samples once, and the low-shot SVM on one layer of one
model's features."""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

from ..devices import select_device
from ..feature_files import voc07_split_with_features
from ..io import write_json_atomic
from ..numerics import configure_torch
from .lowshot import (draw_lowshot_samples, evaluate_lowshot_with_scores, load_lowshot_samples,
                      read_published_lowshot_samples, save_lowshot_samples)
from .svm import protocol_costs


def draw_voc07_lowshot_samples(lowshot_config: dict, voc07_root: str, classes: Sequence[str], output: str,
                               log: logging.Logger) -> None:
    from ..data.voc07 import read_voc07_labels, voc07_class_names

    classes = list(classes) or voc07_class_names(voc07_root)
    ids, labels = read_voc07_labels(voc07_root, "trainval", classes)
    folder = lowshot_config.get("published_samples") or ""
    if folder:  # the challenge's own samples (evaluation.voc07_lowshot.published_samples)
        samples = read_published_lowshot_samples(folder, ids, classes, lowshot_config["k_values"],
                                                 lowshot_config["num_samples"])
    else:
        samples = draw_lowshot_samples(labels, lowshot_config["k_values"], lowshot_config["num_samples"],
                                       lowshot_config["seed"])
    samples["image_ids_digest"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    save_lowshot_samples(output, samples)
    log.info("low-shot samples: k %s x %d samples (%s)", lowshot_config["k_values"], lowshot_config["num_samples"],
             f"published, read from {folder}" if folder else f"drawn with seed {lowshot_config['seed']}")


def evaluate_voc07_lowshot(trainval_features: str, test_features: str, samples_path: str, layer: str,
                           lowshot_config: dict, voc07_root: str, classes: Sequence[str], output: str, n_jobs: int,
                           log: logging.Logger, scores_output: str | None = None) -> None:
    configure_torch(n_jobs)
    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    samples = load_lowshot_samples(samples_path)
    costs = protocol_costs(lowshot_config["costs"], lowshot_config["extra_powers"])
    result, sample_scores = evaluate_lowshot_with_scores(train_x, train_y, test_x, test_y, samples, costs, classes,
                                                         n_jobs=n_jobs, device=select_device())
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
    from ..io import atomic_path

    arrays = {f"k{k}_sample{index + 1}": scores for k, draws in sample_scores.items()
              for index, scores in enumerate(draws)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, image_ids=np.asarray(read_image_set(voc07_root, "test")),
                     classes=np.asarray(list(classes)), **arrays)
