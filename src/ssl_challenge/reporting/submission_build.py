"""The ``submission_files`` stage: one model's challenge files (formats in :mod:`.submission`) from what the
tracks retained, in ``results/submission/<model>/``:

- ``voc07_classification.json``: the full SVM's test scores of the best layer (by test mAP, the leaderboard's
  convention);
- ``voc07_lowshot_sample<s>_k<k>.json``: the low-shot SVMs' test scores at each k's chosen cost, best layer (by
  track score);
- ``places205_val.json``: the best layer's Places205 val predictions;
- ``voc07_detection.zip``: the detector's ``comp4_det_test_<class>.txt`` files (when the model has a detector);
- ``manifest.json`` (last): model, config digest, code digest, data digests, the pipeline's metrics and the
  sha256 of every file above. Files of an earlier build that are not rebuilt are removed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core import provenance
from ..evaluation import submission_formats as submission
from ..core.io import atomic_path, read_npz
from ..evaluation.svm import read_test_scores
from .table_formats import read_json

CLASSIFICATION_FILE = "voc07_classification.json"
PLACES205_FILE = "places205_val.json"
DETECTION_FILE = "voc07_detection.zip"
PREDICTIONS_WRITER = "evaluate_places205_linear of stages.places205_track (rule linear_probe)"


def best_entry(results: dict[str, str], score) -> tuple[dict, str]:
    """(result, retained-file path) of the best of {result JSON: retained file} by ``score(result)``."""
    loaded = [(read_json(path), retained) for path, retained in results.items()]
    return max(loaded, key=lambda pair: score(pair[0]))


def _checked_arrays(path: str, classes: Sequence[str] | None) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    arrays = read_test_scores(path)
    stored = [str(name) for name in arrays["classes"]]
    if classes and list(classes) != stored:
        raise ValueError(f"{path}: scores of classes {stored}, but the configuration's classes are {list(classes)}; "
                         "rerun the track that wrote it")
    return arrays, [str(image_id) for image_id in arrays["image_ids"]], stored


def config_digest(config: dict) -> str:
    """SHA-256 (16 hex digits) of a configuration as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digests(roots: dict) -> dict[str, str]:
    """sha256 (16 hex) of what the figures are scored against: VOC07's ImageSets/Main lists and test annotations;
    Places205's val list."""
    from ..data import layouts
    from ..data.voc07 import read_image_set

    voc = hashlib.sha256()
    for path in sorted(layouts.voc07_image_sets_dir(roots["voc07"]).glob("*.txt")):
        voc.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for image_id in read_image_set(roots["voc07"], "test"):
        voc.update(layouts.voc07_annotation_path(roots["voc07"], image_id).read_bytes() + b"\0")
    places = hashlib.sha256(layouts.places205_list_file(roots["places205"], "val").read_bytes())
    return {"voc07": voc.hexdigest()[:16], "places205": places.hexdigest()[:16]}


def build_submission(model: str, spec: dict, roots: dict, classes: Sequence[str], config_digest: str,
                     manifest_output: str, log: logging.Logger) -> dict:
    from ..data.places205 import read_places205_list

    folder = Path(manifest_output).parent
    folder.mkdir(parents=True, exist_ok=True)
    written, metrics = [], {}

    result, scores_path = best_entry(spec["voc07_svm"], lambda entry: entry["map"])
    arrays, image_ids, stored = _checked_arrays(scores_path, classes)
    submission.write_voc07_classification(folder / CLASSIFICATION_FILE, image_ids, stored, arrays["scores"])
    written.append(folder / CLASSIFICATION_FILE)
    metrics["voc07_svm"] = {"map": result["map"], "layer": result["layer"]}

    result, scores_path = best_entry(spec["voc07_lowshot"], lambda entry: entry["track_score"])
    arrays, image_ids, stored = _checked_arrays(scores_path, classes)
    for key in sorted(name for name in arrays if name.startswith("k")):
        k, sample = (int(part) for part in key[1:].split("_sample"))
        written.append(submission.write_voc07_lowshot_classification(folder, sample, k, image_ids, stored,
                                                                     arrays[key]))
    metrics["voc07_lowshot"] = {"track_score": result["track_score"], "layer": result["layer"],
                                "per_k_mean": {k: entry["mean"] for k, entry in result["per_k"].items()}}

    (result_path, predictions_path), = spec["places205_linear"].items()
    result = read_json(result_path)
    arrays = read_npz(predictions_path, PREDICTIONS_WRITER, ["predictions", "layer"])
    relative_paths, _ = read_places205_list(roots["places205"], "val")
    submission.write_places205_predictions(folder / PLACES205_FILE, relative_paths, arrays["predictions"])
    written.append(folder / PLACES205_FILE)
    layer = str(arrays["layer"])
    metrics["places205_linear"] = {"top1": result["top1"][layer], "layer": layer}

    for result_path, zip_path in spec["voc07_detection"].items():
        with atomic_path(folder / DETECTION_FILE) as tmp:
            shutil.copyfile(zip_path, tmp)
        written.append(folder / DETECTION_FILE)
        metrics["voc07_detection"] = {"map": read_json(result_path)["map"]}

    keep = {path.name for path in written} | {Path(manifest_output).name}
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    code = provenance.code_digest(sorted(provenance.PACKAGE_DIR.rglob("*.py")))
    manifest = submission.write_manifest(manifest_output, model, config_digest, code, data_digests(roots),
                                         metrics, written)
    log.info("%s: %d submission files in %s; metrics %s", model, len(written), folder, metrics)
    return manifest
