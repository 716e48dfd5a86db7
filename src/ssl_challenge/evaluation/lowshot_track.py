"""Track 2, the workflow stages: draw the VOC07 low-shot samples once, and the low-shot SVM on one layer of one
model's features."""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

from ..devices import select_device
from ..features import voc07_split_with_features
from ..io import write_json_atomic
from ..numerics import configure_torch
from .lowshot import draw_lowshot_samples, evaluate_lowshot, load_lowshot_samples, save_lowshot_samples
from .svm import protocol_costs


def draw_voc07_lowshot_samples(lowshot_config: dict, voc07_root: str, classes: Sequence[str], output: str,
                               log: logging.Logger) -> None:
    from ..data.voc07 import read_voc07_labels, voc07_class_names

    classes = list(classes) or voc07_class_names(voc07_root)
    ids, labels = read_voc07_labels(voc07_root, "trainval", classes)
    samples = draw_lowshot_samples(labels, lowshot_config["k_values"], lowshot_config["num_samples"],
                                   lowshot_config["seed"])
    samples["image_ids_digest"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    save_lowshot_samples(output, samples)
    log.info("low-shot samples: k %s x %d samples", lowshot_config["k_values"], lowshot_config["num_samples"])


def evaluate_voc07_lowshot(trainval_features: str, test_features: str, samples_path: str, layer: str,
                           lowshot_config: dict, voc07_root: str, classes: Sequence[str], output: str, n_jobs: int,
                           log: logging.Logger) -> None:
    configure_torch(n_jobs)
    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    samples = load_lowshot_samples(samples_path)
    costs = protocol_costs(lowshot_config["costs"], lowshot_config["extra_powers"])
    result = evaluate_lowshot(train_x, train_y, test_x, test_y, samples, costs, classes, n_jobs=n_jobs,
                              device=select_device())
    result.update(layer=layer, dim=int(train_x.shape[1]))
    write_json_atomic(output, result)
    log.info("layer %s: low-shot track score %.2f", layer, result["track_score"])
