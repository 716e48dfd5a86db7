"""The challenge's submission files (FAIR benchmark, iccv_challenge/): one writer and one reader per format, and the
scorers that recompute a track's figure from a file and the dataset's own labels.

Formats (see docs/protocols.md, "The challenge's submission files"):

- VOC07 classification (full SVM): JSON {image id: {class name: score}} over the VOC07 test images, one image per
  line. Scored with the SVM track's AP (all-point, difficult images left out per class), mAP x100.
- VOC07 low-shot: the same JSON per sample and k, named ``voc07_lowshot_sample<s>_k<k>.json`` with s counted from
  1, as the challenge names its training samples. Scored per file as above; per k the mean, min, max and std
  (ddof 0) over samples; the track score is the mean over k of the per-k means.
- Places205: JSON {relative image path: predicted class index} over the val images. A class index rather than
  205 scores per image: top-1 needs only the argmax, the file is the shape of the reference's
  ``val_targets.json`` ({path: class index}), and it is 200 times smaller. Ties in the scores go to the lowest
  class index (numpy's argmax), as in the probe's evaluation (torch's argmax).
- Detection: a zip holding ``comp4_det_test_<class>.txt`` for every class (empty when the class has no
  detection), lines ``<image id> <score> <xmin> <ymin> <xmax> <ymax>`` with VOC's 1-based pixel coordinates.
  Scored with :mod:`.evaluation.detection_ap`; ties in the scores keep the file's line order.
- ``manifest.json``: the model, config digest, code digest, data digests, metrics and the sha256 of every
  submission file beside it.

Numbers are written with Python's shortest round-trip representation, so a file scores exactly as the arrays it
was written from. Every reader error names the file (and line, or zip member and line) and what was expected.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np

from ..core.io import write_atomic, write_json_atomic, write_text_atomic

LOWSHOT_FILE = "voc07_lowshot_sample{sample}_k{k}.json"
LOWSHOT_FILE_PATTERN = re.compile(r"voc07_lowshot_sample(\d+)_k(\d+)\.json")
DETECTION_FILE = "comp4_det_test_{class_name}.txt"
DETECTION_FILE_PATTERN = re.compile(r"comp4_det_test_(.+)\.txt")
MANIFEST_FORMAT = 1
# fixed member timestamps: the same detections give the same zip bytes (and digest)
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------------------------------------ shared helpers
def _number_text(value: float, what: str) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value}; submission files hold finite numbers only")
    return repr(value)


def _json_lines(entries: Sequence[tuple[str, object]]) -> str:
    """A JSON object with one key per line, so that reader errors can name a line."""
    body = ",\n".join(f"{json.dumps(key)}: {json.dumps(value, allow_nan=False)}" for key, value in entries)
    return "{\n" + body + "\n}\n" if entries else "{}\n"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _load_json_object(path: Path) -> tuple[dict, str]:
    """(object, text) of a JSON file whose top level must be an object; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"submission file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: expected a JSON object at the top level, got {type(data).__name__}")
    return data, text


def _where(path: Path, text: str, key: str) -> str:
    """``path:line`` of the first line holding ``key`` as a JSON key (``path`` alone when not found)."""
    needle = json.dumps(key) + ":"
    offset = text.find(needle)
    return f"{path}:{text.count(chr(10), 0, offset) + 1}" if offset >= 0 else str(path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(path: Path, found: Sequence[str], expected: Sequence[str], what: str) -> None:
    found_set, expected_set = set(found), set(expected)
    missing = [key for key in expected if key not in found_set]
    extra = [key for key in found if key not in expected_set]
    if missing or extra:
        raise ValueError(f"{path}: {len(missing)} {what} missing ({missing[:5]}{'...' if len(missing) > 5 else ''}) "
                         f"and {len(extra)} unknown ({extra[:5]}{'...' if len(extra) > 5 else ''}); expected exactly "
                         f"the {len(expected)} {what} of the evaluated split")


# ------------------------------------------------------------------------------------------------ VOC07 classification
def write_voc07_classification(path: str | os.PathLike, image_ids: Sequence[str], classes: Sequence[str],
                               scores: np.ndarray) -> None:
    """{image id: {class: score}} from ``scores`` [M, C] (rows ``image_ids``, columns ``classes``), atomically."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(image_ids), len(classes)):
        raise ValueError(f"{path}: scores of shape {scores.shape} for {len(image_ids)} images x {len(classes)} classes")
    if not np.isfinite(scores).all():
        raise ValueError(f"{path}: scores contain NaN or infinity; submission files hold finite numbers only")
    entries = [(image_id, {name: float(value) for name, value in zip(classes, row)})
               for image_id, row in zip(image_ids, scores.tolist())]
    write_text_atomic(path, _json_lines(entries))


def read_voc07_classification(path: str | os.PathLike, image_ids: Sequence[str], classes: Sequence[str]
                              ) -> np.ndarray:
    """Scores float64 [M, C] in the order of ``image_ids`` and ``classes``; the file must hold exactly those
    images, each with exactly those classes and a finite number per class."""
    path = Path(path)
    data, text = _load_json_object(path)
    _check_keys(path, list(data), list(image_ids), "images")
    scores = np.empty((len(image_ids), len(classes)), dtype=np.float64)
    for row, image_id in enumerate(image_ids):
        entry = data[image_id]
        if not isinstance(entry, dict):
            raise ValueError(f"{_where(path, text, image_id)}: image {image_id!r}: expected {{class: score}}")
        if set(entry) != set(classes):
            raise ValueError(f"{_where(path, text, image_id)}: image {image_id!r} has classes "
                             f"{sorted(entry)}; expected {sorted(classes)}")
        for column, name in enumerate(classes):
            if not _is_number(entry[name]):
                raise ValueError(f"{_where(path, text, image_id)}: image {image_id!r}, class {name!r}: score "
                                 f"{entry[name]!r} is not a finite number")
            scores[row, column] = entry[name]
    return scores


def score_voc07_classification(path: str | os.PathLike, voc07_root: str | os.PathLike,
                               classes: Sequence[str] | None = None) -> dict:
    """mAP x100 of a classification file against ``ImageSets/Main/<class>_test.txt``: per class the all-point
    AP of the SVM track, difficult images left out. Returns {"map", "per_class": {class: AP x100}}."""
    from ..data.voc07 import read_voc07_labels, voc07_class_names
    from .svm import test_average_precision

    classes = list(classes) if classes else voc07_class_names(voc07_root)
    image_ids, labels = read_voc07_labels(voc07_root, "test", classes)
    scores = read_voc07_classification(path, image_ids, classes)
    per_class = {name: 100.0 * test_average_precision(scores[:, c], labels[:, c]) for c, name in enumerate(classes)}
    return {"map": float(np.mean(list(per_class.values()))), "per_class": per_class,
            "metric": "all-point interpolated AP (VOC2010+), difficult test images excluded per class"}


# ------------------------------------------------------------------------------------------------ low-shot
def lowshot_submission_path(folder: str | os.PathLike, sample: int, k: int) -> Path:
    """``<folder>/voc07_lowshot_sample<sample>_k<k>.json``, ``sample`` counted from 1."""
    if int(sample) < 1:
        raise ValueError(f"low-shot samples are counted from 1 in file names, got {sample}")
    return Path(folder) / LOWSHOT_FILE.format(sample=int(sample), k=int(k))


def write_voc07_lowshot_classification(folder: str | os.PathLike, sample: int, k: int, image_ids: Sequence[str],
                                       classes: Sequence[str], scores: np.ndarray) -> Path:
    """The test scores of one low-shot sample and k (as :func:`write_voc07_classification`); returns the path."""
    path = lowshot_submission_path(folder, sample, k)
    write_voc07_classification(path, image_ids, classes, scores)
    return path


def score_voc07_lowshot(paths: Sequence[str | os.PathLike], voc07_root: str | os.PathLike,
                        classes: Sequence[str] | None = None) -> dict:
    """Score low-shot files (named by :func:`lowshot_submission_path`). Returns {"track_score", "per_k": {str(k):
    {mean, min, max, std, sample_maps: {str(sample): mAP}}}}, all x100, std over samples with ddof 0."""
    if not paths:
        raise ValueError("no low-shot submission files given")
    sample_maps: dict[int, dict[int, float]] = {}
    for path in paths:
        match = LOWSHOT_FILE_PATTERN.fullmatch(Path(path).name)
        if match is None:
            raise ValueError(f"{path}: a low-shot submission file must be named {LOWSHOT_FILE}")
        sample, k = int(match.group(1)), int(match.group(2))
        if sample in sample_maps.get(k, {}):
            raise ValueError(f"{path}: sample {sample} of k={k} is given twice")
        sample_maps.setdefault(k, {})[sample] = score_voc07_classification(path, voc07_root, classes)["map"]
    per_k = {}
    for k in sorted(sample_maps):
        values = np.asarray([sample_maps[k][sample] for sample in sorted(sample_maps[k])])
        per_k[str(k)] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
                         "std": float(values.std()),
                         "sample_maps": {str(sample): sample_maps[k][sample] for sample in sorted(sample_maps[k])}}
    return {"track_score": float(np.mean([entry["mean"] for entry in per_k.values()])), "per_k": per_k}


# ------------------------------------------------------------------------------------------------ Places205
def write_places205_predictions(path: str | os.PathLike, relative_paths: Sequence[str], predictions: np.ndarray
                                ) -> None:
    """{relative path: class index} from ``predictions``: int [N] class indices, or scores [N, K] (argmax, the
    lowest index on ties)."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        if not np.isfinite(predictions).all():
            raise ValueError(f"{path}: Places205 scores contain NaN or infinity")
        predictions = predictions.argmax(axis=1)
    if predictions.shape != (len(relative_paths),) or not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"{path}: expected {len(relative_paths)} integer class indices or an [N, K] score array, "
                         f"got {predictions.dtype} of shape {predictions.shape}")
    if (predictions < 0).any():
        raise ValueError(f"{path}: negative class index {int(predictions.min())}")
    write_text_atomic(path, _json_lines([(relative, int(label)) for relative, label
                                         in zip(relative_paths, predictions.tolist())]))


def read_places205_predictions(path: str | os.PathLike, relative_paths: Sequence[str]) -> np.ndarray:
    """int64 [N] class indices in the order of ``relative_paths``; the file must hold exactly those images."""
    path = Path(path)
    data, text = _load_json_object(path)
    _check_keys(path, list(data), list(relative_paths), "val images")
    predictions = np.empty(len(relative_paths), dtype=np.int64)
    for row, relative in enumerate(relative_paths):
        label = data[relative]
        if type(label) is not int or label < 0:
            raise ValueError(f"{_where(path, text, relative)}: image {relative!r}: {label!r} is not a class index "
                             "(an integer >= 0)")
        predictions[row] = label
    return predictions


def score_places205(path: str | os.PathLike, places205_root: str | os.PathLike) -> dict:
    """Top-1 x100 of a predictions file against ``trainvalsplit_places205/val_places205.csv``."""
    from ..data.places205 import read_places205_list

    relative_paths, labels = read_places205_list(places205_root, "val")
    predictions = read_places205_predictions(path, relative_paths)
    return {"top1": 100.0 * float((predictions == labels).mean()), "num_images": len(relative_paths)}


# ------------------------------------------------------------------------------------------------ detection
def write_detection_zip(path: str | os.PathLike, detections: Mapping[str, Sequence[tuple]],
                        classes: Sequence[str]) -> None:
    """A zip of ``comp4_det_test_<class>.txt`` for every class of ``classes`` (empty without detections) from
    ``detections`` {class: [(image id, score, xmin, ymin, xmax, ymax), ...]} (1-based pixels), in that order."""
    unknown = sorted(set(detections) - set(classes))
    if unknown:
        raise ValueError(f"{path}: detections for classes {unknown} that are not in {list(classes)}")
    members = {}
    for name in classes:
        lines = []
        for index, row in enumerate(detections.get(name, [])):
            image_id, *numbers = row
            if len(numbers) != 5 or not str(image_id) or any(char.isspace() for char in str(image_id)):
                raise ValueError(f"{path}: class {name!r}, detection {index}: expected (image id, score, xmin, "
                                 f"ymin, xmax, ymax), got {row!r}")
            lines.append(" ".join([str(image_id)] + [_number_text(value, f"{path}: class {name!r}, detection "
                                                                         f"{index}") for value in numbers]) + "\n")
        members[DETECTION_FILE.format(class_name=name)] = "".join(lines)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for member, text in members.items():
                archive.writestr(zipfile.ZipInfo(member, date_time=ZIP_DATE_TIME), text,
                                 compress_type=zipfile.ZIP_DEFLATED)

    write_atomic(path, write)


def read_detection_zip(path: str | os.PathLike, classes: Sequence[str], image_ids: Collection[str] | None = None
                       ) -> dict[str, list[tuple]]:
    """{class: [(image id, score, xmin, ymin, xmax, ymax), ...]} in file order. Members may sit in a folder of the
    zip; every class needs its file; a file of another class, a second file of one class or any other file is an
    error (macOS ``__MACOSX/`` entries and folders excepted). With ``image_ids``, a line naming another image is
    an error naming the member and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection submission {path} does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: not a zip file ({error})") from error
    detections: dict[str, list[tuple]] = {}
    with archive:
        for member in archive.namelist():
            if member.endswith("/") or member.startswith("__MACOSX/"):
                continue
            match = DETECTION_FILE_PATTERN.fullmatch(member.rsplit("/", 1)[-1])
            if match is None or match.group(1) not in classes:
                raise ValueError(f"{path}: member {member!r} is not one of the files {DETECTION_FILE} with a class "
                                 f"of {list(classes)}")
            if match.group(1) in detections:
                raise ValueError(f"{path}: a second file for class {match.group(1)!r} ({member!r})")
            detections[match.group(1)] = _parse_detection_lines(archive.read(member), f"{path}:{member}", image_ids)
    missing = [name for name in classes if name not in detections]
    if missing:
        raise ValueError(f"{path}: no detection file for classes {missing}; expected "
                         f"{DETECTION_FILE.format(class_name=missing[0])} and the others (empty when a class has "
                         "no detection)")
    return detections


def _parse_detection_lines(data: bytes, where: str, image_ids: Collection[str] | None) -> list[tuple]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not an ASCII text file ({error})") from error
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 6:
                raise ValueError
            numbers = [float(field) for field in fields[1:]]
        except ValueError:
            raise ValueError(f"{where}:{line_number}: {line!r} is not '<image id> <score> <xmin> <ymin> <xmax> "
                             "<ymax>'") from None
        if not all(math.isfinite(value) for value in numbers):
            raise ValueError(f"{where}:{line_number}: {line!r} holds NaN or infinity")
        if image_ids is not None and fields[0] not in image_ids:
            raise ValueError(f"{where}:{line_number}: image {fields[0]!r} is not in the evaluated split")
        rows.append((fields[0], *numbers))
    return rows


def score_voc07_detection(path: str | os.PathLike, voc07_root: str | os.PathLike,
                          classes: Sequence[str] | None = None) -> dict:
    """VOC07 detection mAP x100 of a submission zip against the test split's annotations (see
    :func:`.evaluation.detection_ap.detection_mean_average_precision`)."""
    from ..data.voc07 import read_split_annotations, voc07_class_names
    from .detection_ap import detection_mean_average_precision

    classes = list(classes) if classes else voc07_class_names(voc07_root)
    annotations = read_split_annotations(voc07_root, "test")
    detections = read_detection_zip(path, classes, image_ids=annotations.keys())
    return detection_mean_average_precision(detections, annotations, classes)


# ------------------------------------------------------------------------------------------------ manifest
def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: str | os.PathLike, model: str, config_digest: str, code_digest: str,
                   data_digests: Mapping[str, str], metrics: Mapping, files: Sequence[str | os.PathLike] = ()
                   ) -> dict:
    """``manifest.json`` of a submission: the model, the digests of config, code and data, the metrics (any
    JSON-able mapping of finite numbers) and {name: sha256} of ``files``, which must lie in the manifest's
    folder. Written atomically; returns the manifest."""
    path = Path(path)
    for key, value in (("model", model), ("config_digest", config_digest), ("code_digest", code_digest)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{path}: manifest {key} must be a non-empty string, got {value!r}")
    if not data_digests or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data_digests.items()):
        raise ValueError(f"{path}: manifest data_digests must map each dataset name to its digest, got "
                         f"{data_digests!r}")
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: manifest metrics must be JSON with finite numbers ({error})") from error
    folder = path.parent.resolve()
    digests = {}
    for file in files:
        file = Path(file).resolve()
        if file.parent != folder:
            raise ValueError(f"{path}: submission file {file} is not beside the manifest (in {folder})")
        digests[file.name] = file_sha256(file)
    manifest = {"format": MANIFEST_FORMAT, "model": model, "config_digest": config_digest,
                "code_digest": code_digest, "data_digests": dict(data_digests), "metrics": dict(metrics),
                "files": digests}
    write_json_atomic(path, manifest)
    return manifest


def read_manifest(path: str | os.PathLike, verify_files: bool = True) -> dict:
    """Read ``manifest.json``; with ``verify_files`` every listed file beside it must exist with its sha256."""
    path = Path(path)
    manifest, _ = _load_json_object(path)
    expected = {"format", "model", "config_digest", "code_digest", "data_digests", "metrics", "files"}
    if set(manifest) != expected or manifest["format"] != MANIFEST_FORMAT:
        raise ValueError(f"{path}: a manifest of format {MANIFEST_FORMAT} has exactly the keys {sorted(expected)}; "
                         f"found {sorted(manifest)}")
    if verify_files:
        for name, digest in manifest["files"].items():
            file = path.parent / name
            if not file.is_file() or file_sha256(file) != digest:
                raise ValueError(f"{path}: {file} is missing or differs from the digest the manifest records")
    return manifest
