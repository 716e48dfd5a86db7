"""Every format's one reader turns a truncated or damaged file into ``CorruptFileError`` naming the file and what
writes it: feature, label, test-scores, result, low-shot samples, model and checkpoint files. Each good file is
written by the format's real writer and read back; a copy cut to half its bytes (a copy cut short, a disk that
filled up) and a copy of random bytes must be refused. The svm_full stage, given a truncated feature file, names it
(it used to end with numpy's ``BadZipFile: File is not a zip file`` and no file name)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from layouts_fixture import make_tiny_voc07
from ssl_challenge.clustering.labels import load_labels, read_labels_file, save_labels
from ssl_challenge.core.io import (CorruptFileError, ModelFileError, read_json_object, read_npz, torch_save_atomic,
                                   write_json_atomic)
from ssl_challenge.data.feature_files import load_features, save_features
from ssl_challenge.engine.checkpoint import RunPosition, restore_checkpoint, save_checkpoint
from ssl_challenge.evaluation.lowshot import draw_lowshot_samples, load_lowshot_samples, save_lowshot_samples
from ssl_challenge.evaluation.svm import read_test_scores
from ssl_challenge.models.backbones import build_backbone, read_model_file
from ssl_challenge.reporting.table_formats import read_json
from ssl_challenge.stages.svm_track import evaluate_voc07_svm, save_test_scores

RNG = np.random.default_rng(0)


def truncated(path: Path) -> Path:
    """A copy of ``path`` holding its first half."""
    copy = path.with_name(f"truncated_{path.name}")
    copy.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return copy


def garbage(path: Path) -> Path:
    """A copy of ``path`` of as many random bytes."""
    copy = path.with_name(f"garbage_{path.name}")
    copy.write_bytes(np.random.default_rng(1).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    return copy


# Each format: (file name, write a good file with the real writer -> what reading it must give, read, writer).
def write_features(path):
    features = {"feat4": RNG.standard_normal((6, 5)).astype(np.float32),
                "feat5": RNG.standard_normal((6, 3)).astype(np.float32)}
    save_features(path, features, {"model": "models/rot.pth", "image_ids": [f"{i:06d}" for i in range(6)]})
    return features


def read_features(path):
    return load_features(path)[0]


def read_one_layer(path):
    return {"feat5": load_features(path, ["feat5"])[0]["feat5"]}


def write_labels(path):
    labels = np.array([2, 0, 1, 1, 0, 2, 2])
    save_labels(path, labels, {"num_clusters": 3})
    return {"labels": labels}


def read_labels(path):
    return {"labels": read_labels_file(path)[0]}


def read_checked_labels(path):
    return {"labels": load_labels(path, 7, num_clusters=3)}


def write_test_scores(path):
    scores = RNG.standard_normal((4, 2))
    save_test_scores(str(path), ["000001", "000002", "000003", "000004"], ["cat", "dog"], scores)
    return {"scores": scores}


def read_scores(path):
    return {"scores": read_test_scores(path)["scores"]}


def write_result(path):
    result = {"map": 41.25, "layer": "feat5", "per_class": {"cat": {"ap": 40.0}, "dog": {"ap": 42.5}}}
    write_json_atomic(path, result)
    return {"map": np.array(result["map"])}


def read_result(path):
    return {"map": np.array(read_json(path)["map"])}


def write_samples(path):
    labels = np.where(np.arange(40)[:, None] % 4 == np.arange(4)[None, :], 1, -1).astype(np.int8)
    samples = draw_lowshot_samples(labels, [1, 2], num_samples=2, seed=0)
    save_lowshot_samples(path, samples)
    return {"positives": np.array(samples["samples"]["2"][1]["positives"])}


def read_samples(path):
    return {"positives": np.array(load_lowshot_samples(path)["samples"]["2"][1]["positives"])}


def write_model(path):
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet"})
    torch_save_atomic({"backbone": backbone.state_dict(), "backbone_config": backbone.config, "method": "rot"}, path)
    return {"stem": backbone.state_dict()["stem.0.weight"].numpy()}


def read_model(path):
    return {"stem": read_model_file(path)["backbone"]["stem.0.weight"].numpy()}


def tiny_method_and_optimizer(seed):
    torch.manual_seed(seed)
    method = torch.nn.Linear(3, 2)
    return method, torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)


def write_checkpoint(path):
    method, optimizer = tiny_method_and_optimizer(0)
    method(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # a momentum buffer to save
    save_checkpoint(path, method, optimizer, RunPosition(epoch=1, iteration=4), "digest")
    return {"weight": method.weight.detach().numpy().copy()}


def read_checkpoint(path):
    method, optimizer = tiny_method_and_optimizer(1)
    run = restore_checkpoint(path, method, optimizer, "digest")
    assert (run.epoch, run.iteration) == (1, 4)
    return {"weight": method.weight.detach().numpy()}


FORMATS = {
    "feature file": ("voc07_test.npz", write_features, read_features, "save_features"),
    "feature file, one layer": ("voc07_test.npz", write_features, read_one_layer, "save_features"),
    "label file": ("labels.npz", write_labels, read_labels, "save_labels"),
    "label file, checked": ("labels.npz", write_labels, read_checked_labels, "save_labels"),
    "test scores": ("feat5.scores.npz", write_test_scores, read_scores, "save_test_scores"),
    "track result": ("feat5.json", write_result, read_result, "svm_full"),
    "low-shot samples": ("k2.json", write_samples, read_samples, "save_lowshot_samples"),
    "model file": ("rot.pth", write_model, read_model, "engine.train.backbone_file"),
    "checkpoint": ("checkpoint.pth", write_checkpoint, read_checkpoint, "save_checkpoint"),
}


@pytest.mark.parametrize("damage", [truncated, garbage])
@pytest.mark.parametrize("name", FORMATS)
def test_a_damaged_file_is_named_with_its_writer(tmp_path, name, damage):
    file_name, write, read, writer = FORMATS[name]
    path = tmp_path / file_name
    written = write(path)
    for key, value in read(path).items():  # the good file reads back as written
        np.testing.assert_array_equal(value, written[key])
    damaged = damage(path)
    with pytest.raises(CorruptFileError) as error:
        read(damaged)
    message = str(error.value)
    assert str(damaged) in message and writer in message
    assert "truncated or corrupt" in message


def test_a_damaged_member_of_an_archive_is_corrupt(tmp_path):
    """A byte changed inside a stored array (not at the end): zip's checksum finds it when the array is read."""
    path = tmp_path / "labels.npz"
    write_labels(path)
    data = bytearray(path.read_bytes())
    offset = data.index(np.array([2, 0, 1, 1, 0, 2, 2], dtype=np.int64).tobytes())
    data[offset] = 7  # label 2 becomes 7: still a well-formed array, but not the bytes that were written
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"labels.npz: unreadable, truncated or corrupt \(BadZipFile: Bad "
                                               r"CRC-32.*save_labels"):
        read_labels_file(path)


def test_a_damaged_byte_of_a_torch_file_is_corrupt_not_planted(tmp_path):
    """A byte that is no pickle opcode, inside a whole zip: torch refuses it as it would refuse a planted payload,
    but the message must say damaged (and what writes the file), not that loading it could run code."""
    path = tmp_path / "rot.pth"
    write_model(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"\x80\x02}") + 2] = 0xFF  # the pickle's first opcode after its protocol header
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"rot.pth: unreadable, truncated or corrupt \(UnpicklingError: "
                                               r"Unsupported operand 255\); it is written by the training loop"):
        read_model_file(path)


def test_files_of_another_format_keep_their_own_errors(tmp_path):
    """A whole file of the wrong kind is not called damaged: each reader says what it expected."""
    path = tmp_path / "feat5.scores.npz"
    write_test_scores(path)
    with pytest.raises(ValueError, match="not a feature file") as error:
        load_features(path)
    assert not isinstance(error.value, CorruptFileError)
    with pytest.raises(ValueError, match="not a pseudo-label file") as error:
        read_labels_file(path)
    assert not isinstance(error.value, CorruptFileError)
    write_features(tmp_path / "features.npz")
    with pytest.raises(KeyError, match="no layer"):
        load_features(tmp_path / "features.npz", ["feat3"])
    write_json_atomic(tmp_path / "list.json", [1, 2])
    with pytest.raises(ValueError, match="expected a JSON object") as error:
        read_json_object(tmp_path / "list.json", "missing", "(a result)", "svm_full")
    assert not isinstance(error.value, CorruptFileError)
    planted = tmp_path / "planted.pth"
    torch.save({"backbone": {}, "backbone_config": {}, "extra": Path("x")}, planted)
    with pytest.raises(ModelFileError, match="refused") as error:
        read_model_file(planted)
    assert not isinstance(error.value, CorruptFileError)


def test_invalid_json_names_the_line_and_the_writer(tmp_path):
    path = tmp_path / "feat5.json"
    path.write_text('{\n  "map": 41.25,\n  "layer": "feat5"\n')
    with pytest.raises(CorruptFileError, match=r"feat5.json:4: not valid JSON: truncated or corrupt "
                                               r"\(JSONDecodeError: .*svm_full.*Delete it and rerun"):
        read_json(path)


def test_a_user_supplied_file_is_not_said_to_be_written_by_the_workflow(tmp_path):
    path = tmp_path / "proposals.json"
    path.write_text('{"000001": [[0, 0, 1')
    with pytest.raises(CorruptFileError, match=r"proposals.json:1: not valid JSON: .*Replace it") as error:
        read_json_object(path, "missing", "(proposals)")
    assert "written by" not in str(error.value)


def test_a_missing_array_of_a_scores_file_is_named(tmp_path):
    path = tmp_path / "feat5.scores.npz"
    write_test_scores(path)
    with pytest.raises(CorruptFileError, match=r"feat5.scores.npz: .*no array\(s\) \['predictions'\]"):
        read_npz(path, "save_test_scores", ["scores", "predictions"])


def test_svm_full_names_a_truncated_feature_file(tmp_path):
    """As a user would meet it: the svm_full stage on a finished run whose test features were cut short."""
    classes = ["cat", "dog", "bird"]
    truth = make_tiny_voc07(tmp_path / "VOCdevkit", classes, n_trainval=6, n_test=4)
    features = {}
    for split in ("trainval", "test"):
        features[split] = tmp_path / "features" / f"voc07_{split}.npz"
        count = len(truth[split]["ids"])
        save_features(features[split], {"feat5": RNG.standard_normal((count, 8)).astype(np.float32)},
                      {"image_ids": list(truth[split]["ids"])})
    cut = truncated(features["test"])
    output = tmp_path / "results" / "feat5.json"
    with pytest.raises(CorruptFileError) as error:
        evaluate_voc07_svm(str(features["trainval"]), str(cut), "feat5", {"costs": [1.0], "extra_powers": False},
                           str(tmp_path / "VOCdevkit"), classes, str(output), n_jobs=1,
                           log=logging.getLogger("test"), scores_output=str(output.with_suffix(".scores.npz")))
    message = str(error.value)
    assert message.startswith(f"{cut}: unreadable, truncated or corrupt (BadZipFile: File is not a zip file)")
    assert "save_features (rules extract_voc07_features" in message and "Delete it and rerun" in message
    assert not output.exists()


def test_every_writer_named_is_a_rule_or_a_function_of_the_package():
    """The writers a message names exist: renaming a rule or a writer function without its reader's text fails."""
    import re

    from ssl_challenge.clustering.labels import LABELS_FILE_WRITER
    from ssl_challenge.data.feature_files import FEATURE_FILE_WRITER
    from ssl_challenge.engine.checkpoint import CHECKPOINT_WRITER
    from ssl_challenge.evaluation.lowshot import SAMPLES_WRITER
    from ssl_challenge.evaluation.svm import TEST_SCORES_WRITER
    from ssl_challenge.models.backbones import MODEL_FILE_WRITER
    from ssl_challenge.reporting.submission_build import PREDICTIONS_WRITER
    from ssl_challenge.reporting.table_formats import RESULT_FILE_WRITER

    root = Path(__file__).resolve().parents[2]
    rules = {name for path in (root / "rules").glob("*.smk")
             for name in re.findall(r"^rule (\w+):|^use rule \w+ as (\w+) with:", path.read_text(), re.M)}
    rules = {name for pair in rules for name in pair if name}
    sources = list((root / "src" / "ssl_challenge").rglob("*.py"))
    known = rules | {path.stem for path in sources} | {name for path in sources
                                                       for name in re.findall(r"^def (\w+)", path.read_text(), re.M)}
    for writer in (FEATURE_FILE_WRITER, LABELS_FILE_WRITER, CHECKPOINT_WRITER, SAMPLES_WRITER, TEST_SCORES_WRITER,
                   MODEL_FILE_WRITER, PREDICTIONS_WRITER, RESULT_FILE_WRITER):
        names = set(re.findall(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b", writer))
        assert names and names <= known, (writer, names - known)
