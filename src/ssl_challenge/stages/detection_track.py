"""Track 4, the workflow stage: train the frozen-backbone detector of one model on VOC07 trainval (resumable),
detect on VOC07 test, write the challenge's detection zip and score it.

The figure the leaderboard shows is the score of the written zip (:func:`..submission.score_voc07_detection`),
so the submission file alone reproduces it. A run lives in ``<run root>/<identity digest>/`` (the backbone file's
content, the detection config, the code, the image lists and the numerics mode): a killed job of the same
identity resumes from its checkpoint, anything that changes the result starts a new run.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

from ..core import provenance, run_files
from ..core.config import from_dict
from ..core.devices import select_device
from ..core.io import file_digest, write_json_atomic, write_text_atomic
from ..core.numerics import start_numerics

DETECTOR_KEYS = ("min_size", "max_size", "anchor_sizes", "aspect_ratios", "roi_pooling", "roi_output_size",
                 "roi_sampling_ratio", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                 "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_batch_size_per_image",
                 "box_batch_size_per_image", "box_score_threshold", "box_nms_threshold", "detections_per_image",
                 "frozen_affine_batchnorm", "box_smooth_l1_beta", "rpn_straddle_threshold")
SOLVER_KEYS = ("iterations", "lr", "steps", "gamma", "warmup_iterations", "warmup_factor", "momentum",
               "weight_decay", "images_per_batch", "flip", "checkpoint_every", "seed")


def split_config(detection_config: dict):
    """(DetectorConfig, SolverConfig) from the ``evaluation.voc07_detection`` section."""
    from ..detection.model import DetectorConfig
    from ..detection.train import SolverConfig

    where = "evaluation.voc07_detection"
    detector = from_dict(DetectorConfig, {key: detection_config[key] for key in DETECTOR_KEYS
                                          if key in detection_config}, where=where)
    solver = from_dict(SolverConfig, {key: detection_config[key] for key in SOLVER_KEYS
                                      if key in detection_config}, where=where)
    return detector, solver



def evaluate_voc07_detection(model_path: str, model_name: str, detection_config: dict, voc07_root: str,
                             classes: Sequence[str], result_output: str, detections_output: str,
                             metrics_output: str, run_root: str, threads: int, log: logging.Logger,
                             stop_after_iterations: int | None = None, data_workers: int = 0) -> dict | None:
    """Returns the result written to ``result_output`` (None when ``stop_after_iterations`` stopped training).
    ``data_workers`` (``resources.data_workers``) is not part of the run's identity: it changes no result."""
    import torch

    from ..data.loading import check_workers
    from ..data.voc07 import voc07_class_names
    from ..detection.data import DetectionSet, read_proposals
    from ..detection.model import build_detector
    from ..detection.train import detect, run_digest, train_detector
    from ..models.backbones import load_backbone
    from ..core.numerics import deterministic_requested
    from ..evaluation.submission_formats import score_voc07_detection, write_detection_zip

    data_workers = check_workers(data_workers)  # before anything is read or trained
    start_numerics(threads)
    device = select_device()
    detector_config, solver_config = split_config(detection_config)
    classes = list(classes) or voc07_class_names(voc07_root)
    cache = bool(detection_config.get("cache_images", False))
    trainval = DetectionSet(voc07_root, "trainval", classes, cache=cache)
    test = DetectionSet(voc07_root, "test", classes, cache=False)
    proposal_file = detection_config.get("proposals") or ""
    proposals = None
    if proposal_file:
        proposals = {"trainval": read_proposals(proposal_file, trainval.image_ids()),
                     "test": read_proposals(proposal_file, test.image_ids())}
    identity = {
        "backbone_file": file_digest(model_path), "detection": detection_config, "classes": classes,
        "code": provenance.code_digest([Path(__file__)]),
        "images": {split.split: hashlib.sha256("\n".join(split.image_ids()).encode()).hexdigest()[:16]
                   for split in (trainval, test)},
        "proposals": file_digest(proposal_file) if proposal_file else None,
        "deterministic_numerics": deterministic_requested(),
    }
    digest = run_digest(identity)
    run_dir = Path(run_root) / digest
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "identity.json", identity)
    variant = "Fast R-CNN on given proposals" if proposals else "Faster R-CNN (end to end)"
    log.info("%s: %s on %d trainval / %d test images, %d classes, run folder %s", model_name, variant,
             len(trainval), len(test), len(classes), run_dir)

    torch.manual_seed(solver_config.seed)  # the new layers' initialisation
    backbone, backbone_config = load_backbone(model_path, device)
    detector = build_detector(backbone, detector_config, len(classes), model_name, given_proposals=bool(proposals))
    done = train_detector(detector, trainval, solver_config, run_dir, device, digest, log=log.info,
                          proposals=proposals["trainval"] if proposals else None,
                          stop_after_iterations=stop_after_iterations, workers=data_workers)
    if not done:
        return None
    detections = detect(detector, test, device, batch_size=max(1, solver_config.images_per_batch),
                        proposals=proposals["test"] if proposals else None, workers=data_workers)
    write_detection_zip(detections_output, detections, classes)
    scored = score_voc07_detection(detections_output, voc07_root, classes)
    metrics = run_dir / run_files.METRICS
    write_text_atomic(metrics_output, metrics.read_text() if metrics.exists() else "")
    result = {"map": scored["map"], "per_class": scored["per_class"], "num_detections": scored["num_detections"],
              "num_positives": scored["num_positives"], "metric": scored["metric"], "variant": variant,
              "model": model_name, "backbone": backbone_config, "iterations": solver_config.iterations,
              "detections_file": Path(detections_output).name, "run": digest}
    write_json_atomic(result_output, result)
    (run_dir / "checkpoint.pth").unlink(missing_ok=True)  # the result is written: nothing left to resume
    log.info("%s: VOC07 detection mAP %.2f", model_name, result["map"])
    return result
