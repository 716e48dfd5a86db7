"""The challenge's submission files: every writer/reader round trip, the scorers against hand values and against
the SVM code's own figure, malformed files named by file and line, the manifest and the command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from layouts_fixture import make_tiny_places205, make_tiny_voc07
from ssl_challenge.reporting import score
from ssl_challenge.evaluation import submission_formats as submission
from ssl_challenge.data.voc07 import read_voc07_labels
from ssl_challenge.evaluation import svm

CLASSES = ["cat", "dog", "bird"]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def voc_root(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=30, n_test=15)
    return tmp_path / "VOCdevkit"


def random_scores(rows, seed):
    return np.random.default_rng(seed).normal(size=(rows, len(CLASSES)))


# ------------------------------------------------------------------------------------------------ classification
def test_classification_file_reproduces_the_svm_figure(voc_root, tmp_path):
    train_ids, train_y = read_voc07_labels(voc_root, "trainval", CLASSES)
    test_ids, test_y = read_voc07_labels(voc_root, "test", CLASSES)
    rng = np.random.default_rng(0)
    signatures = rng.normal(size=(len(CLASSES), 16))
    features = lambda labels: np.maximum((labels > 0) @ signatures * 0.5 + rng.normal(size=(len(labels), 16)), 0)
    report, test_scores = svm.full_svm_report_and_test_scores(features(train_y), train_y, features(test_y), test_y,
                                                          [1.0, 0.1], CLASSES, n_jobs=1, solver="liblinear")
    path = tmp_path / "voc07_preds.json"
    submission.write_voc07_classification(path, test_ids, CLASSES, test_scores)
    data = json.loads(path.read_text())
    assert list(data) == test_ids and list(data[test_ids[0]]) == CLASSES
    scored = submission.score_voc07_classification(path, voc_root, CLASSES)
    assert scored["map"] == report["map"]  # exactly: the file holds the same doubles
    assert scored["per_class"] == {name: report["per_class"][name]["ap"] for name in CLASSES}
    assert 0 < scored["map"] < 100
    np.testing.assert_array_equal(submission.read_voc07_classification(path, test_ids, CLASSES), test_scores)


def test_classification_hand_value(voc_root, tmp_path):
    test_ids, test_y = read_voc07_labels(voc_root, "test", CLASSES)
    scores = (test_y > 0).astype(float)  # perfect ranking for every class
    scores[0, :] = [-1.0, 5.0, 5.0]  # image 31: a cat (ranked last), difficult for dog, not a bird (ranked first)
    assert test_y[0].tolist() == [1, 0, -1]
    path = tmp_path / "p.json"
    submission.write_voc07_classification(path, test_ids, CLASSES, scores)
    result = submission.score_voc07_classification(path, voc_root)  # classes from disk (sorted)
    # cat: 5 positives among 12 non-difficult images; 4 tied first (recall 0.8, precision 1), the fifth last
    # (recall 1, precision 5/12)
    assert result["per_class"]["cat"] == pytest.approx(100 * (0.8 + 0.2 * 5 / 12))
    # dog: image 31 is difficult, so left out: a perfect ranking (as a negative it would cost 1/6)
    assert result["per_class"]["dog"] == pytest.approx(100.0)
    # bird: the false hit first, then the 5 positives tied (one threshold): recall 1 at precision 5/6
    assert result["per_class"]["bird"] == pytest.approx(100 * 5 / 6)
    assert list(result["per_class"]) == ["bird", "cat", "dog"]


def test_malformed_classification_files_are_named(voc_root, tmp_path):
    test_ids, _ = read_voc07_labels(voc_root, "test", CLASSES)
    path = tmp_path / "p.json"
    submission.write_voc07_classification(path, test_ids, CLASSES, random_scores(len(test_ids), 1))
    lines = path.read_text().splitlines()
    assert lines[3].startswith(f'"{test_ids[2]}"')
    path.write_text("\n".join(lines[:3] + [lines[3].replace('"dog": ', '"dog": "x", "unused": ')] + lines[4:]))
    with pytest.raises(ValueError, match=rf"p.json:4: image '{test_ids[2]}' has classes"):
        submission.score_voc07_classification(path, voc_root, CLASSES)
    path.write_text("\n".join(lines[:3] + [re.sub(r'"dog": [^,}]+', '"dog": "x"', lines[3])] + lines[4:]))
    with pytest.raises(ValueError, match=rf"p.json:4: image '{test_ids[2]}', class 'dog': score 'x'"):
        submission.score_voc07_classification(path, voc_root, CLASSES)
    path.write_text("\n".join(lines[:1] + lines[2:]))  # the first image's line removed
    with pytest.raises(ValueError, match=rf"p.json: 1 images missing \(\['{test_ids[0]}'\]\)"):
        submission.score_voc07_classification(path, voc_root, CLASSES)
    path.write_text("\n".join(lines[:5] + ["oops"] + lines[5:]))
    with pytest.raises(ValueError, match=r"p.json:6: not valid JSON"):
        submission.score_voc07_classification(path, voc_root, CLASSES)
    path.write_text("\n".join(lines[:1] + [re.sub(r'"cat": [^,}]+', '"cat": NaN', lines[1])] + lines[2:]))
    with pytest.raises(ValueError, match=r"p.json: NaN is not a number JSON allows"):
        submission.score_voc07_classification(path, voc_root, CLASSES)
    with pytest.raises(ValueError, match="NaN or infinity"):
        submission.write_voc07_classification(path, test_ids, CLASSES, np.full((len(test_ids), 3), np.inf))


# ------------------------------------------------------------------------------------------------ low-shot
def test_lowshot_files_score_per_k_and_track(voc_root, tmp_path):
    test_ids, test_y = read_voc07_labels(voc_root, "test", CLASSES)
    folder = tmp_path / "lowshot"
    expected, paths = {}, []
    for k in (1, 4):
        for sample in (1, 2, 3):
            scores = random_scores(len(test_ids), seed=10 * k + sample) + (test_y > 0) * 0.5 * k
            paths.append(submission.write_voc07_lowshot_classification(folder, sample, k, test_ids, CLASSES, scores))
            expected.setdefault(k, []).append(
                100 * np.mean([svm.test_average_precision(scores[:, c], test_y[:, c]) for c in range(3)]))
    assert paths[0].name == "voc07_lowshot_sample1_k1.json"
    result = submission.score_voc07_lowshot(paths, voc_root, CLASSES)
    for k in (1, 4):
        entry, values = result["per_k"][str(k)], np.asarray(expected[k])
        assert entry["sample_maps"] == {"1": pytest.approx(values[0]), "2": pytest.approx(values[1]),
                                        "3": pytest.approx(values[2])}
        assert (entry["mean"], entry["min"], entry["max"], entry["std"]) == pytest.approx(
            (values.mean(), values.min(), values.max(), values.std()))
    assert result["track_score"] == pytest.approx((np.mean(expected[1]) + np.mean(expected[4])) / 2)
    wrong = tmp_path / "lowshot_k1.json"
    wrong.write_text("{}")
    with pytest.raises(ValueError, match="lowshot_k1.json: a low-shot submission file must be named"):
        submission.score_voc07_lowshot([wrong], voc_root, CLASSES)
    with pytest.raises(ValueError, match="sample 1 of k=1 is given twice"):
        submission.score_voc07_lowshot([paths[0], paths[0]], voc_root, CLASSES)


# ------------------------------------------------------------------------------------------------ Places205
def test_places205_predictions_round_trip_and_top1(tmp_path):
    truth = make_tiny_places205(tmp_path / "places", n_classes=3, per_class_val=2)
    relative_paths, labels = truth["val"]
    scores = np.eye(3)[labels] + 0.1  # right everywhere ...
    scores[0] = [0.0, 1.0, 1.0]  # ... but image 0 (class 0): a tie between 1 and 2, resolved to 1: wrong
    scores[5] = [0.5, 0.5, 0.5]  # image 5 (class 2): a three-way tie resolved to 0: wrong
    path = tmp_path / "places205_val.json"
    submission.write_places205_predictions(path, relative_paths, scores)
    assert json.loads(path.read_text())[relative_paths[0]] == 1
    predictions = submission.read_places205_predictions(path, relative_paths)
    assert predictions.tolist() == [1] + labels[1:5] + [0]
    assert submission.score_places205(path, tmp_path / "places") == {"top1": pytest.approx(100 * 4 / 6),
                                                                      "num_images": 6}
    submission.write_places205_predictions(path, relative_paths, np.asarray(labels))  # class indices directly
    assert submission.score_places205(path, tmp_path / "places")["top1"] == 100.0
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2].replace(": 0", ": 0.0")] + lines[3:]))
    with pytest.raises(ValueError, match=rf"places205_val.json:3: image '{relative_paths[1]}': 0.0 is not a class"):
        submission.score_places205(path, tmp_path / "places")
    path.write_text("\n".join(lines[:-3] + [lines[-3].rstrip(",")] + lines[-1:]))  # the last image removed
    with pytest.raises(ValueError, match=r"places205_val.json: 1 val images missing"):
        submission.score_places205(path, tmp_path / "places")


# ------------------------------------------------------------------------------------------------ detection
@pytest.fixture
def small_voc(tmp_path):
    # test images 000003..000006: 000003 bird + difficult cat (1,1,5,4); 000004 cat; 000005 dog + difficult bird;
    # 000006 bird; every non-difficult box is (2, 3, 12, 10)
    make_tiny_voc07(tmp_path / "small", CLASSES, n_trainval=2, n_test=4)
    return tmp_path / "small"


DETECTIONS = {
    "cat": [("000004", 0.9, 2, 3, 12, 10), ("000003", 0.8, 1, 1, 5, 4), ("000005", 0.7, 2, 3, 12, 10)],
    "bird": [("000003", 0.95, 2.5, 3.0, 12.0, 10.5), ("000003", 0.6, 2, 3, 12, 10), ("000006", 0.6, 3, 3, 12, 10)],
}


def test_detection_zip_round_trip_and_hand_map(small_voc, tmp_path):
    path = tmp_path / "detections.zip"
    submission.write_detection_zip(path, DETECTIONS, CLASSES)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [f"comp4_det_test_{name}.txt" for name in sorted(CLASSES)]
        assert archive.read("comp4_det_test_dog.txt") == b""
        assert archive.read("comp4_det_test_cat.txt").decode().splitlines()[0] == "000004 0.9 2.0 3.0 12.0 10.0"
    read = submission.read_detection_zip(path, CLASSES)
    assert read == {"cat": [tuple([row[0]] + [float(v) for v in row[1:]]) for row in DETECTIONS["cat"]], "dog": [],
                    "bird": [tuple([row[0]] + [float(v) for v in row[1:]]) for row in DETECTIONS["bird"]]}
    result = submission.score_voc07_detection(path, small_voc, CLASSES)
    # cat: hit, difficult (ignored), miss -> 1; dog: no detection -> 0; bird: hit, duplicate, hit -> 28/33
    assert result["per_class"] == {"cat": pytest.approx(100.0), "dog": 0.0, "bird": pytest.approx(100 * 28 / 33)}
    assert result["map"] == pytest.approx((100 + 100 * 28 / 33) / 3)
    first = path.read_bytes()
    submission.write_detection_zip(path, DETECTIONS, CLASSES)
    assert path.read_bytes() == first  # reproducible bytes, so the manifest's digest is stable


def rewrite_member(path, member, text, extra=None):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[member] = text.encode()
    members.update(extra or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_malformed_detection_zips_are_named(small_voc, tmp_path):
    path = tmp_path / "d.zip"
    submission.write_detection_zip(path, DETECTIONS, CLASSES)
    rewrite_member(path, "comp4_det_test_cat.txt", "000004 0.9 2 3 12 10\n000003 0.8 1 1 5\n")
    with pytest.raises(ValueError, match=r"d.zip:comp4_det_test_cat.txt:2: '000003 0.8 1 1 5' is not"):
        submission.score_voc07_detection(path, small_voc, CLASSES)
    rewrite_member(path, "comp4_det_test_cat.txt", "000004 0.9 2 3 12 10\n\n000001 0.8 1 1 5 4\n")
    with pytest.raises(ValueError, match=r"d.zip:comp4_det_test_cat.txt:3: image '000001' is not in the evaluated"):
        submission.score_voc07_detection(path, small_voc, CLASSES)  # 000001 is a trainval image
    rewrite_member(path, "comp4_det_test_cat.txt", "000004 nan 2 3 12 10\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_cat.txt:1: .* NaN or infinity"):
        submission.score_voc07_detection(path, small_voc, CLASSES)
    rewrite_member(path, "comp4_det_test_cat.txt", "", extra={"results/comp4_det_test_horse.txt": b""})
    with pytest.raises(ValueError, match=r"d.zip: member 'results/comp4_det_test_horse.txt' is not one of"):
        submission.score_voc07_detection(path, small_voc, CLASSES)
    with zipfile.ZipFile(path, "w") as archive:  # in a folder, and the dog file missing
        archive.writestr("results/comp4_det_test_cat.txt", "000004 0.9 2 3 12 10\n")
        archive.writestr("results/comp4_det_test_bird.txt", "")
    with pytest.raises(ValueError, match=r"d.zip: no detection file for classes \['dog'\]"):
        submission.score_voc07_detection(path, small_voc, CLASSES)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("results/comp4_det_test_dog.txt", "")
    assert submission.score_voc07_detection(path, small_voc, CLASSES)["per_class"]["cat"] == 100.0
    path.write_text("not a zip")
    with pytest.raises(ValueError, match="d.zip: not a zip file"):
        submission.score_voc07_detection(path, small_voc, CLASSES)
    with pytest.raises(ValueError, match=r"class 'cat', detection 0"):
        submission.write_detection_zip(path, {"cat": [("a b", 0.5, 1, 1, 2, 2)]}, CLASSES)


# ------------------------------------------------------------------------------------------------ manifest
def test_manifest_round_trip_and_digest_check(tmp_path):
    predictions = tmp_path / "voc07_preds.json"
    predictions.write_text('{"000001": {"cat": 0.5}}\n')
    manifest = submission.write_manifest(
        tmp_path / "manifest.json", model="odc_r50", config_digest="0123abcd", code_digest="fedc9876",
        data_digests={"voc07": "aa11", "places205": "bb22"}, metrics={"voc07_svm": {"feat5": 80.5}},
        files=[predictions])
    assert manifest["files"] == {"voc07_preds.json": submission.file_sha256(predictions)}
    assert submission.read_manifest(tmp_path / "manifest.json") == manifest
    predictions.write_text('{"000001": {"cat": 0.6}}\n')
    with pytest.raises(ValueError, match=r"manifest.json: .*voc07_preds.json is missing or differs"):
        submission.read_manifest(tmp_path / "manifest.json")
    assert submission.read_manifest(tmp_path / "manifest.json", verify_files=False)["model"] == "odc_r50"
    with pytest.raises(ValueError, match="code_digest must be a non-empty string"):
        submission.write_manifest(tmp_path / "m.json", "m", "c", "", {"voc07": "a"}, {})
    with pytest.raises(ValueError, match="metrics must be JSON with finite numbers"):
        submission.write_manifest(tmp_path / "m.json", "m", "c", "d", {"voc07": "a"}, {"map": float("nan")})
    with pytest.raises(ValueError, match="is not beside the manifest"):
        submission.write_manifest(tmp_path / "sub" / "m.json", "m", "c", "d", {"voc07": "a"}, {},
                                  files=[predictions])
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------------------------------------ command line
def test_command_line_scores_and_names_bad_files(small_voc, tmp_path, capsys):
    path = tmp_path / "detections.zip"
    submission.write_detection_zip(path, DETECTIONS, CLASSES)
    assert score.main(["detection", str(path), "--voc07-root", str(small_voc), "--output",
                       str(tmp_path / "result.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["map"] == pytest.approx((100 + 100 * 28 / 33) / 3)
    assert json.loads((tmp_path / "result.json").read_text()) == printed
    path.write_text("not a zip")
    assert score.main(["detection", str(path), "--voc07-root", str(small_voc)]) == 1
    assert "detections.zip: not a zip file" in capsys.readouterr().err


def test_module_runs_without_torch(voc_root, tmp_path):
    test_ids, _ = read_voc07_labels(voc_root, "test", CLASSES)
    path = tmp_path / "p.json"
    submission.write_voc07_classification(path, test_ids, CLASSES, random_scores(len(test_ids), 3))
    code = ("import sys, runpy; sys.argv = sys.argv[1:]; "
            "runpy.run_module('ssl_challenge.reporting.score', run_name='__main__', alter_sys=True)")
    check = ("import sys, ssl_challenge.reporting.score, ssl_challenge.evaluation.detection_ap, ssl_challenge.data.voc07; "
             "assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    subprocess.run([sys.executable, "-c", check], check=True, env=env)
    run = subprocess.run([sys.executable, "-c", code, "score", "voc07", str(path), "--voc07-root", str(voc_root)],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["map"] == submission.score_voc07_classification(path, voc_root)["map"]
