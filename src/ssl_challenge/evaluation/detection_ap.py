"""Track 4's metric: VOC2007 detection average precision (11-point, IoU > 0.5), as the challenge scored it.

Per class, the detections of every test image are ranked by score and walked down once:

- a detection is compared with every ground-truth box of its class in its image (difficult ones and ones already
  matched included) and takes the one of highest IoU (the first in annotation order on an IoU tie);
- if that IoU is above 0.5: a difficult box makes the detection neither a true nor a false positive; an unmatched
  box becomes matched and the detection is a true positive; an already matched box makes it a false positive
  (a duplicate). Otherwise it is a false positive;
- boxes are VOC's 1-based inclusive pixels, so widths, heights and intersections add 1;
- recall divides the true positives by the number of non-difficult boxes; precision divides them by the true plus
  false positives (0 while both are 0, i.e. when the first detections only hit difficult boxes);
- AP is the mean, over the 11 recall thresholds, of the best precision at a recall >= the threshold (0 if none).

This is the behaviour of the reference evaluator (Detectron's ``voc_eval`` with the 2007 metric, itself a port of
the VOC devkit), including three details a plain reading of "greedy matching at IoU 0.5" would miss:

- Matching takes the highest-IoU box *among all* boxes of the class, not the highest-IoU *unmatched* one: when the
  best box is already taken the detection is a duplicate even if another free box overlaps it by more than 0.5.
- The thresholds are ``numpy.arange(0, 1.1, 0.1)``, whose 4th, 7th and 8th values are 0.30000000000000004,
  0.6000000000000001 and 0.7000000000000001: a recall of exactly 3/10, 6/10 or 7/10 (possible when the number of
  positives is a multiple of 10, e.g. VOC07 test's 480 pottedplants) does not reach them. Kept so that our figures
  are the challenge's.
- Tied scores: the reference sorts with ``numpy.argsort(-scores)``, whose default kind ("quicksort": introsort,
  and SIMD sorts on recent x86 builds of numpy 2) does not promise any order among equal keys; with numpy 1.x it
  kept input order for up to 16 detections only, and with numpy 2.4 here it already reorders ties among 10. We
  use a stable sort of the negated scores, so ties keep input (file) order, always.

Where the reference crashes or divides by zero we decide: a class with no detection has AP 0 (the reference
fails on an empty detection file); a class with no non-difficult ground-truth box has no AP (the reference
silently scores it 0 after a division by zero) and :func:`class_average_precision` raises ``ValueError`` naming
the class, as :func:`.ap.average_precision` does for a ranking without positives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

IOU_THRESHOLD = 0.5
# The reference's thresholds, float artefacts included (see the module docstring).
RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


@dataclass(frozen=True)
class GroundTruth:
    """The boxes of one class in one image: ``boxes`` float64 [G, 4] (xmin, ymin, xmax, ymax, 1-based inclusive)
    and ``difficult`` bool [G], in annotation order."""

    boxes: np.ndarray
    difficult: np.ndarray


def voc_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU [G] of one box [4] with ``boxes`` [G, 4] in VOC's inclusive pixel convention (+1 on every extent).

    Same arithmetic, in the same order, as the reference, so that IoUs near 0.5 fall on the same side.
    """
    inner_width = np.maximum(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1.0, 0.0)
    inner_height = np.maximum(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1.0, 0.0)
    intersection = inner_width * inner_height
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0) - intersection)
    return intersection / union


def eleven_point_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Mean over :data:`RECALL_THRESHOLDS` of the best precision at recall >= threshold (0 when none reaches it).

    ``recall`` and ``precision`` [D] are the points of the ranked detections, in any order."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    total = 0.0
    for threshold in RECALL_THRESHOLDS:
        reached = recall >= threshold
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / RECALL_THRESHOLDS.size


def match_detections(image_ids: Sequence[str], scores: np.ndarray, boxes: np.ndarray,
                     ground_truth: Mapping[str, GroundTruth]) -> tuple[np.ndarray, np.ndarray]:
    """Walk the detections of one class down the ranking; returns (true_positive, false_positive), bool [D] each,
    in ranked order (a detection matching a difficult box is neither).

    ``image_ids`` [D], ``scores`` [D], ``boxes`` [D, 4]. An image absent from ``ground_truth`` has no box of the
    class; callers check beforehand that every image id belongs to the evaluated split."""
    order = np.argsort(-scores, kind="stable")  # ties keep input order
    matched = {image_id: np.zeros(len(truth.difficult), dtype=bool) for image_id, truth in ground_truth.items()}
    true_positive = np.zeros(len(order), dtype=bool)
    false_positive = np.zeros(len(order), dtype=bool)
    for rank, index in enumerate(order):
        truth = ground_truth.get(image_ids[index])
        if truth is None or len(truth.difficult) == 0:
            false_positive[rank] = True
            continue
        overlaps = voc_iou(boxes[index], truth.boxes)
        best = int(np.argmax(overlaps))  # the first box on an IoU tie
        if not overlaps[best] > IOU_THRESHOLD:
            false_positive[rank] = True
        elif truth.difficult[best]:
            continue
        elif matched[image_ids[index]][best]:
            false_positive[rank] = True
        else:
            matched[image_ids[index]][best] = True
            true_positive[rank] = True
    return true_positive, false_positive


def class_average_precision(image_ids: Sequence[str], scores: np.ndarray, boxes: np.ndarray,
                            ground_truth: Mapping[str, GroundTruth], class_name: str = "") -> float:
    """VOC07 11-point AP in [0, 1] of one class's detections (``image_ids`` [D], ``scores`` [D], ``boxes`` [D, 4])
    against ``ground_truth`` {image id: :class:`GroundTruth`} of that class.

    No detection gives 0. Raises ``ValueError`` naming ``class_name`` when no box is non-difficult (AP undefined),
    when the lengths disagree, or when a score or coordinate is NaN or infinite."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(image_ids) == scores.size == boxes.shape[0]:
        raise ValueError(f"class {class_name!r}: {len(image_ids)} image ids, {scores.size} scores and "
                         f"{boxes.shape[0]} boxes; expected one of each per detection")
    if not (np.isfinite(scores).all() and np.isfinite(boxes).all()):
        raise ValueError(f"class {class_name!r}: detection scores or boxes contain NaN or infinity")
    num_positives = sum(int((~truth.difficult).sum()) for truth in ground_truth.values())
    if num_positives == 0:
        raise ValueError(f"class {class_name!r}: no non-difficult ground-truth box in the evaluated images, so its "
                         "detection AP is undefined; evaluate on images that contain the class or drop the class")
    if scores.size == 0:
        return 0.0
    true_positive, false_positive = match_detections(image_ids, scores, boxes, ground_truth)
    true_positives = np.cumsum(true_positive, dtype=np.float64)
    false_positives = np.cumsum(false_positive, dtype=np.float64)
    recall = true_positives / num_positives
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    return eleven_point_average_precision(recall, precision)


def ground_truth_by_class(annotations: Mapping[str, Sequence[dict]], classes: Sequence[str]
                          ) -> dict[str, dict[str, GroundTruth]]:
    """{class: {image id: GroundTruth}} from {image id: objects} as :func:`..data.voc07.parse_annotation` reads
    them. Every image gets an entry per class (possibly empty); objects of other classes are left out."""
    grouped: dict[str, dict[str, GroundTruth]] = {name: {} for name in classes}
    for image_id, objects in annotations.items():
        for name in classes:
            own = [item for item in objects if item["name"] == name]
            grouped[name][image_id] = GroundTruth(
                boxes=np.asarray([item["bbox"] for item in own], dtype=np.float64).reshape(-1, 4),
                difficult=np.asarray([bool(item["difficult"]) for item in own], dtype=bool))
    return grouped


def detection_mean_average_precision(detections: Mapping[str, Sequence[tuple]],
                                     annotations: Mapping[str, Sequence[dict]], classes: Sequence[str]) -> dict:
    """VOC07 detection mAP over ``classes``.

    ``detections`` {class: [(image id, score, xmin, ymin, xmax, ymax), ...]} in input order (which breaks score
    ties); a class missing from it has no detection. ``annotations`` {image id: objects} over the evaluated images
    (the test split). Returns ``{"map": x100, "per_class": {class: AP x100}, "num_detections": {class: n},
    "num_positives": {class: n}}``. Raises ``ValueError`` naming the class and image for a detection of an image
    that is not evaluated, or for a class of ``detections`` that is not in ``classes``.
    """
    unknown = sorted(set(detections) - set(classes))
    if unknown:
        raise ValueError(f"detections for classes {unknown} that are not evaluated (classes: {list(classes)})")
    truth = ground_truth_by_class(annotations, classes)
    per_class, counts, positives = {}, {}, {}
    for name in classes:
        rows = list(detections.get(name, []))
        for row in rows:
            if row[0] not in annotations:
                raise ValueError(f"class {name!r}: a detection of image {row[0]!r}, which is not among the "
                                 f"{len(annotations)} evaluated images")
        image_ids = [row[0] for row in rows]
        scores = np.asarray([row[1] for row in rows], dtype=np.float64)
        boxes = np.asarray([row[2:6] for row in rows], dtype=np.float64).reshape(-1, 4)
        per_class[name] = 100.0 * class_average_precision(image_ids, scores, boxes, truth[name], name)
        counts[name] = len(rows)
        positives[name] = sum(int((~item.difficult).sum()) for item in truth[name].values())
    return {"map": float(np.mean(list(per_class.values()))), "per_class": per_class, "num_detections": counts,
            "num_positives": positives, "metric": "VOC07 11-point AP at IoU > 0.5, difficult boxes ignored"}
