"""End to end: after the smoke run, the leaderboard's detection column and the challenge's submission files of
every row, each scored from the files alone (the command-line scorer, and for detection an independent
evaluator written here from the VOC devkit's rules) reproducing the pipeline's own figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
DETECTION_MODELS = {"random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot"}  # 'auto' on the smoke config


def score(workdir: Path, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"))
    result = subprocess.run([sys.executable, "-m", "ssl_challenge.reporting.score", *args], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def independent_voc07_map(zip_path: Path, voc_root: Path) -> float:
    """VOC07 11-point mAP x100 straight from the devkit's rules: per class, detections by decreasing score (file
    order on ties), each to the highest-IoU box of its class in its image (inclusive pixels), a difficult box
    ignored, a box matched once, recall over non-difficult boxes, max precision at recall >= t for t in
    numpy.arange(0, 1.1, 0.1)."""
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    test_ids = main.joinpath("test.txt").read_text().split()
    classes = sorted(path.name[:-len("_trainval.txt")] for path in main.glob("*_trainval.txt"))
    boxes = {}
    for image_id in test_ids:
        root = ElementTree.parse(voc_root / "VOC2007" / "Annotations" / f"{image_id}.xml").getroot()
        for item in root.iter("object"):
            box = [float(item.find("bndbox").find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
            difficult = item.find("difficult") is not None and item.find("difficult").text.strip() == "1"
            boxes.setdefault((item.find("name").text.strip(), image_id), []).append((box, difficult))
    aps = []
    with zipfile.ZipFile(zip_path) as archive:
        for name in classes:
            rows = [line.split() for line in archive.read(f"comp4_det_test_{name}.txt").decode().splitlines()]
            rows = sorted(enumerate(rows), key=lambda pair: (-float(pair[1][1]), pair[0]))
            positives = sum(1 for (cls, _), items in boxes.items() if cls == name for _, hard in items if not hard)
            used, tp, fp, curve = set(), 0, 0, []
            for _, (image_id, _, *coordinates) in rows:
                det = [float(value) for value in coordinates]
                best, best_iou = None, -1.0
                for index, (box, _) in enumerate(boxes.get((name, image_id), [])):
                    width = min(det[2], box[2]) - max(det[0], box[0]) + 1
                    height = min(det[3], box[3]) - max(det[1], box[1]) + 1
                    inter = max(width, 0.0) * max(height, 0.0)
                    union = ((det[2] - det[0] + 1) * (det[3] - det[1] + 1)
                             + (box[2] - box[0] + 1) * (box[3] - box[1] + 1) - inter)
                    if inter / union > best_iou:
                        best, best_iou = index, inter / union
                if best is not None and best_iou > 0.5 and boxes[name, image_id][best][1]:
                    pass
                elif best is not None and best_iou > 0.5 and (image_id, best) not in used:
                    used.add((image_id, best))
                    tp += 1
                else:
                    fp += 1
                curve.append((tp / positives, tp / max(tp + fp, np.finfo(np.float64).eps)))
            aps.append(np.mean([max([p for r, p in curve if r >= t], default=0.0) for t in np.arange(0, 1.1, 0.1)]))
    return 100.0 * float(np.mean(aps))


def test_leaderboard_detection_column_and_submission_files_reproduce_the_figures(smoke_run):
    workdir, _ = smoke_run
    results = workdir / "results"
    table = pd.read_csv(results / "tables" / "leaderboard.csv")
    measured = table[table["section"] == "measured"].set_index("model")
    with_detection = measured["voc07_detection"].dropna()
    assert set(with_detection.index) == DETECTION_MODELS and with_detection.between(0, 100).all()
    assert "voc07_detection" in (results / "tables" / "leaderboard.md").read_text()
    voc_root = results / "data" / "embedded" / "VOCdevkit"
    places_root = results / "data" / "embedded" / "places205"
    for model, row in measured.iterrows():
        folder = results / "submission" / model
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["model"] == model and set(manifest["data_digests"]) == {"voc07", "places205"}
        assert len(manifest["config_digest"]) == len(manifest["code_digest"]) == 16
        assert sorted(manifest["files"]) == sorted(path.name for path in folder.iterdir() if path.name != "manifest.json")
        voc07 = score(workdir, "voc07", str(folder / "voc07_classification.json"), "--voc07-root", str(voc_root))
        assert voc07["map"] == pytest.approx(row["voc07_svm"], abs=1e-9)
        lowshot_files = sorted(str(path) for path in folder.glob("voc07_lowshot_sample*_k*.json"))
        assert len(lowshot_files) == 2 * 2  # smoke: k in {1, 2}, 2 samples
        lowshot = score(workdir, "lowshot", *lowshot_files, "--voc07-root", str(voc_root))
        assert lowshot["track_score"] == pytest.approx(row["voc07_lowshot"], abs=1e-9)
        places = score(workdir, "places205", str(folder / "places205_val.json"), "--places205-root", str(places_root))
        assert places["top1"] == pytest.approx(row["places205_linear"], abs=1e-9)
        assert manifest["metrics"]["voc07_svm"]["map"] == row["voc07_svm"]
        if model in DETECTION_MODELS:
            zip_path = folder / "voc07_detection.zip"
            detection = score(workdir, "detection", str(zip_path), "--voc07-root", str(voc_root))
            assert detection["map"] == pytest.approx(row["voc07_detection"], abs=1e-9)
            assert independent_voc07_map(zip_path, voc_root) == pytest.approx(row["voc07_detection"], abs=0.01)
        else:  # a concatenation has no trunk: no detector, no detection file
            assert not (folder / "voc07_detection.zip").exists() and "voc07_detection" not in manifest["metrics"]
