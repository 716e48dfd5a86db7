"""VOC07 detection AP (11-point, IoU > 0.5) on hand-computed cases and against a brute-force evaluator."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ssl_challenge.evaluation.detection_ap import (GroundTruth, class_average_precision,
                                                   detection_mean_average_precision, eleven_point_average_precision,
                                                   match_detections, voc_iou)


def truth(boxes, difficult=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    flags = np.zeros(len(boxes), dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool)
    return GroundTruth(boxes, flags)


def ap_of(detections, ground_truth, name="cat"):
    """``detections``: [(image id, score, xmin, ymin, xmax, ymax)] in input order."""
    return class_average_precision([row[0] for row in detections], [row[1] for row in detections],
                                   [row[2:] for row in detections], ground_truth, name)


def test_iou_counts_inclusive_pixels():
    # 3x3 and 3x2 pixels, one inside the other: 6 / 9. Without the +1 it would be (2x1) / (2x2) = 0.5 exactly.
    assert voc_iou(np.array([1.0, 1, 3, 2]), np.array([[1.0, 1, 3, 3]]))[0] == pytest.approx(2 / 3)
    # one-pixel-wide overlap of two 2x2 boxes: 2 / (4 + 4 - 2)
    assert voc_iou(np.array([2.0, 1, 3, 2]), np.array([[1.0, 1, 2, 2]]))[0] == pytest.approx(1 / 3)
    assert voc_iou(np.array([5.0, 5, 6, 6]), np.array([[1.0, 1, 2, 2]]))[0] == 0.0


def test_tiny_boxes_where_the_plus_one_decides():
    gt = {"a": truth([[1, 1, 3, 3]])}
    # inclusive IoU 2/3 > 0.5: a true positive (a continuous-coordinate IoU would be exactly 0.5, not enough)
    assert ap_of([("a", 0.9, 1, 1, 3, 2)], gt) == 1.0
    # IoU exactly 0.5 (2 of 4 pixels) is not above the threshold: a false positive
    assert ap_of([("a", 0.9, 1, 1, 4, 1)], {"a": truth([[1, 1, 2, 1]])}) == 0.0


def test_difficult_match_is_neither_true_nor_false_positive():
    gt = {"a": truth([[1, 1, 10, 10], [21, 21, 30, 30]], difficult=[False, True])}
    detections = [("a", 0.9, 21, 21, 30, 30), ("a", 0.8, 1, 1, 10, 10), ("a", 0.7, 50, 50, 60, 60)]
    true_positive, false_positive = match_detections([d[0] for d in detections], np.array([d[1] for d in detections]),
                                                     np.array([d[2:] for d in detections], dtype=float), gt)
    assert true_positive.tolist() == [False, True, False] and false_positive.tolist() == [False, False, True]
    # points (recall, precision): (0, 0) (both counts 0), (1, 1), (1, 1/2): every threshold sees precision 1.
    # Counted as a false positive instead, the difficult hit would give 0.5.
    assert ap_of(detections, gt) == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive():
    gt = {"a": truth([[1, 1, 10, 10]]), "b": truth([[1, 1, 10, 10]])}
    detections = [("a", 0.9, 1, 1, 10, 10), ("a", 0.8, 1, 1, 10, 11), ("b", 0.7, 1, 1, 10, 10)]
    # points: (1/2, 1), (1/2, 1/2), (1, 2/3) -> t = 0 .. 0.5: 1 (6 thresholds), t = 0.6 .. 1: 2/3 (5 thresholds)
    assert ap_of(detections, gt) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_matching_takes_the_best_box_even_when_it_is_taken():
    # the reference's rule: the second detection's best box (IoU 100/110) is taken, so it is a duplicate, although
    # the other box overlaps it by 90/120 = 0.75; "best unmatched box" matching would make it a true positive (AP 1)
    gt = {"a": truth([[1, 1, 10, 10], [3, 1, 12, 10]])}
    detections = [("a", 0.9, 1, 1, 10, 10), ("a", 0.8, 1, 1, 11, 10)]
    assert ap_of(detections, gt) == pytest.approx(6 / 11)


def test_iou_tie_goes_to_the_first_box_in_annotation_order():
    # the detection overlaps both boxes by 90/110; the first is difficult, so the detection is ignored: AP 1,
    # where taking the second (non-difficult, already matched) box would make it a false positive
    gt = {"a": truth([[1, 1, 10, 10], [3, 1, 12, 10]], difficult=[True, False])}
    detections = [("a", 0.9, 3, 1, 12, 10), ("a", 0.8, 2, 1, 11, 10)]
    assert ap_of(detections, gt) == pytest.approx(1.0)


def test_tied_scores_keep_input_order():
    gt = {"a": truth([[1, 1, 10, 10]]), "b": truth([[1, 1, 10, 10]])}
    miss, hit_a, hit_b = ("b", 0.5, 40, 40, 50, 50), ("a", 0.5, 1, 1, 10, 10), ("b", 0.4, 1, 1, 10, 10)
    # miss first: (0, 0), (1/2, 1/2), (1, 2/3) -> 2/3 everywhere
    assert ap_of([miss, hit_a, hit_b], gt) == pytest.approx(2 / 3)
    # hit first: (1/2, 1), (1/2, 1/2), (1, 2/3)
    assert ap_of([hit_a, miss, hit_b], gt) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_many_tied_scores_keep_input_order():
    # 40 equal scores (numpy's default argsort reorders ties of this size): the walk follows the input order
    images = [f"{i:03d}" for i in range(40)]
    gt = {image: truth([[1, 1, 10, 10]]) for image in images}
    hits = [i % 3 != 0 for i in range(40)]
    boxes = np.array([[1, 1, 10, 10] if hit else [30, 30, 40, 40] for hit in hits], dtype=float)
    true_positive, false_positive = match_detections(images, np.full(40, 0.25), boxes, gt)
    assert true_positive.tolist() == hits and false_positive.tolist() == [not hit for hit in hits]


def test_recall_exactly_three_tenths_misses_the_references_threshold():
    # 10 positives; 3 hits (recall 0.3, precision 1), a miss, a hit (recall 0.4, precision 0.8). numpy.arange's
    # 4th threshold is 0.30000000000000004, so it sees 0.8, not 1: AP = (3 x 1 + 2 x 0.8) / 11, not (4 + 0.8) / 11
    gt = {f"{i}": truth([[1, 1, 10, 10]]) for i in range(10)}
    detections = [(f"{i}", 1.0 - i / 10, 1, 1, 10, 10) for i in range(3)]
    detections += [("9", 0.65, 30, 30, 40, 40), ("3", 0.6, 1, 1, 10, 10)]
    assert ap_of(detections, gt) == pytest.approx((3 + 2 * 0.8) / 11)


def test_no_detection_image_without_truth_and_no_positive():
    gt = {"a": truth([[1, 1, 10, 10]]), "empty": truth([])}
    assert ap_of([], gt) == 0.0
    # a detection on an image without a box of the class is a false positive: (0, 0), (1, 1/2)
    assert ap_of([("empty", 0.9, 1, 1, 10, 10), ("a", 0.8, 1, 1, 10, 10)], gt) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="class 'cat': no non-difficult ground-truth box"):
        ap_of([("a", 0.9, 1, 1, 10, 10)], {"a": truth([[1, 1, 10, 10]], difficult=[True])})
    with pytest.raises(ValueError, match="NaN or infinity"):
        ap_of([("a", float("nan"), 1, 1, 10, 10)], gt)


def test_eleven_point_average_precision_hand_values():
    assert eleven_point_average_precision(np.array([]), np.array([])) == 0.0
    assert eleven_point_average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(
        (6 * 1.0 + 5 * 0.5) / 11)


def test_mean_over_classes_with_a_class_without_detections():
    annotations = {
        "000001": [{"name": "cat", "bbox": (1, 1, 10, 10), "difficult": False}],
        "000002": [{"name": "dog", "bbox": (5, 5, 20, 20), "difficult": False},
                   {"name": "horse", "bbox": (1, 1, 4, 4), "difficult": False}],  # a class not evaluated
        "000003": [],
    }
    detections = {"cat": [("000001", 0.9, 1, 1, 10, 10), ("000003", 0.95, 1, 1, 10, 10)]}
    result = detection_mean_average_precision(detections, annotations, ["cat", "dog"])
    assert result["per_class"] == {"cat": pytest.approx(50.0), "dog": 0.0}
    assert result["map"] == pytest.approx(25.0)
    assert result["num_detections"] == {"cat": 2, "dog": 0} and result["num_positives"] == {"cat": 1, "dog": 1}
    with pytest.raises(ValueError, match="image '000009'"):
        detection_mean_average_precision({"cat": [("000009", 0.5, 1, 1, 2, 2)]}, annotations, ["cat", "dog"])
    with pytest.raises(ValueError, match=r"\['bird'\]"):
        detection_mean_average_precision({"bird": []}, annotations, ["cat", "dog"])


# ------------------------------------------------------------------------------------------------ brute force
REFERENCE_THRESHOLDS = [0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001, 0.7000000000000001,
                        0.8, 0.9, 1.0]


def brute_force_ap(detections, objects):
    """Exact arithmetic, one pass per detection over a flat list of boxes, the whole PR curve kept.

    ``detections`` [(image, score, x1, y1, x2, y2)] with integer boxes; ``objects`` [(image, box, difficult)]."""
    def iou(a, b):
        width = min(a[2], b[2]) - max(a[0], b[0]) + 1
        height = min(a[3], b[3]) - max(a[1], b[1]) + 1
        inter = max(width, 0) * max(height, 0)
        area = lambda box: (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        return Fraction(inter, area(a) + area(b) - inter)

    ranked = sorted(range(len(detections)), key=lambda i: (-detections[i][1], i))
    taken = set()
    hits = misses = 0
    curve = []
    positives = sum(1 for _, _, difficult in objects if not difficult)
    for i in ranked:
        image, _, *box = detections[i]
        candidates = [(iou(box, other), j) for j, (owner, other, _) in enumerate(objects) if owner == image]
        best = max(candidates, key=lambda pair: (pair[0], -pair[1])) if candidates else (Fraction(0), None)
        if best[0] > Fraction(1, 2) and objects[best[1]][2]:
            pass
        elif best[0] > Fraction(1, 2) and best[1] not in taken:
            taken.add(best[1])
            hits += 1
        else:
            misses += 1
        curve.append((hits / positives, Fraction(hits, hits + misses) if hits + misses else Fraction(0)))
    total = Fraction(0)
    for threshold in REFERENCE_THRESHOLDS:
        total += max([precision for recall, precision in curve if recall >= threshold], default=Fraction(0))
    return float(total / 11)


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    images = [f"img{i}" for i in range(6)]
    objects = []
    for image in images[:5]:
        for _ in range(int(rng.integers(0, 4))):
            x, y = (int(v) for v in rng.integers(1, 15, size=2))
            w, h = (int(v) for v in rng.integers(0, 8, size=2))
            objects.append((image, (x, y, x + w, y + h), bool(rng.random() < 0.25)))
    if not any(not difficult for _, _, difficult in objects):
        objects.append((images[0], (2, 2, 9, 9), False))
    detections = []
    for _ in range(int(rng.integers(0, 25))):
        image = images[int(rng.integers(0, len(images)))]
        owned = [box for owner, box, _ in objects if owner == image]
        if owned and rng.random() < 0.7:  # jitter a true box, so that matches and duplicates are common
            base = owned[int(rng.integers(0, len(owned)))]
            box = tuple(int(v + rng.integers(-1, 2)) for v in base)
            box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
        else:
            x, y = (int(v) for v in rng.integers(1, 15, size=2))
            box = (x, y, x + int(rng.integers(0, 8)), y + int(rng.integers(0, 8)))
        detections.append((image, float(rng.integers(0, 6)) / 5, *box))  # few distinct scores: many ties
    ground_truth = {image: truth([box for owner, box, _ in objects if owner == image],
                                 [difficult for owner, _, difficult in objects if owner == image]) for image in images}
    assert ap_of(detections, ground_truth) == pytest.approx(brute_force_ap(detections, objects), abs=1e-12)
