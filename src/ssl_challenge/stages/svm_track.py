"""Track 1, the workflow stage: the VOC07 full linear SVM protocol on one layer of one model's features."""
from __future__ import annotations

import logging
from typing import Sequence

from ..core.devices import select_device
from ..data.feature_files import voc07_split_with_features
from ..core.io import write_json_atomic
from ..core.numerics import start_numerics
from ..evaluation.svm import full_svm_report_and_test_scores, protocol_costs


def save_test_scores(path: str, image_ids: Sequence[str], classes: Sequence[str], scores) -> None:
    """The test decision values [M, C] with their image ids and classes (the submission's classification file is
    written from them), atomically."""
    import numpy as np

    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, scores=np.asarray(scores, dtype=np.float64), image_ids=np.asarray(list(image_ids)),
                     classes=np.asarray(list(classes)))


def evaluate_voc07_svm(trainval_features: str, test_features: str, layer: str, svm_config: dict, voc07_root: str,
                       classes: Sequence[str], output: str, n_jobs: int, log: logging.Logger,
                       scores_output: str | None = None) -> None:
    start_numerics(n_jobs)
    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    costs = protocol_costs(svm_config["costs"], svm_config["extra_powers"])
    log.info("layer %s: %s trainval, %s test, %d costs", layer, train_x.shape, test_x.shape, len(costs))
    result, test_scores = full_svm_report_and_test_scores(train_x, train_y, test_x, test_y, costs, classes,
                                                          n_jobs=n_jobs, device=select_device(), log=log.info)
    result.update(layer=layer, dim=int(train_x.shape[1]))
    if scores_output:
        from ..data.voc07 import read_image_set

        save_test_scores(scores_output, read_image_set(voc07_root, "test"), classes, test_scores)
    write_json_atomic(output, result)
    log.info("layer %s: mAP %.2f", layer, result["map"])
