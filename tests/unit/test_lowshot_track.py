"""The lowshot_samples stage, one k per job: the challenge's published samples (evaluation.voc07_lowshot.
published_samples) on a small tree in the FAIR benchmark's format, or samples drawn with (C - 1) x k negatives,
the same as an all-k draw gives."""
from __future__ import annotations

import json
import logging

import numpy as np

from layouts_fixture import make_tiny_voc07
import pytest

from ssl_challenge.data.voc07 import read_voc07_labels
from ssl_challenge.evaluation.lowshot import draw_lowshot_samples, load_lowshot_samples, published_sample_path
from ssl_challenge.stages.lowshot_track import draw_voc07_lowshot_samples
from ssl_challenge.core.provenance import published_samples_param

CLASSES = ["cat", "dog", "bird"]
LOG = logging.getLogger("test")


def test_published_samples_folder_replaces_the_draw(tmp_path):
    truth = make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=30, n_test=6)
    ids, labels = truth["trainval"]["ids"], truth["trainval"]["labels"]
    folder, rng, expected = tmp_path / "low_shot_train", np.random.default_rng(0), {}
    folder.mkdir()
    for k in (1, 2):
        for sample in (1, 2):
            targets = {image_id: {name: -1 for name in CLASSES} for image_id in ids}  # benchmark: -1 ignored
            for c, name in enumerate(CLASSES):
                positives = rng.choice(np.flatnonzero(labels[:, c] == 1), k, replace=False)
                negatives = rng.choice(np.flatnonzero(labels[:, c] == -1), 2 * k, replace=False)
                for row in positives:
                    targets[ids[row]][name] = 1
                for row in negatives:
                    targets[ids[row]][name] = 0
                expected[k, sample, c] = (sorted(positives.tolist()), sorted(negatives.tolist()))
            published_sample_path(folder, sample, k).write_text(json.dumps(targets))
    root, draw_options = str(tmp_path / "VOCdevkit"), {"num_samples": 2, "seed": 0}
    for k in (1, 2):
        output = tmp_path / f"k{k}.json"
        draw_voc07_lowshot_samples(draw_options, k, str(folder), root, CLASSES, str(output), LOG)
        samples = load_lowshot_samples(output)
        assert samples["seed"] is None and str(folder) in samples["source"] and samples["k_values"] == [k]
        for sample in (1, 2):
            for c in range(len(CLASSES)):
                draw = samples["samples"][str(k)][sample - 1]
                assert (draw["positives"][c], draw["negatives"][c]) == expected[k, sample, c]
    for sample in (1, 2):  # one k's job reads that k's files only
        published_sample_path(folder, sample, 2).unlink()
    draw_voc07_lowshot_samples(draw_options, 1, str(folder), root, CLASSES, str(tmp_path / "again.json"), LOG)
    assert load_lowshot_samples(tmp_path / "again.json")["samples"] == load_lowshot_samples(tmp_path / "k1.json")[
        "samples"]

    drawn_output = tmp_path / "drawn.json"
    draw_voc07_lowshot_samples(draw_options, 2, "", root, CLASSES, str(drawn_output), LOG)
    drawn = load_lowshot_samples(drawn_output)
    assert drawn["seed"] == 0 and drawn["negatives_per_positive"] == 2  # (C - 1) x k with C = 3
    assert [len(rows) for rows in drawn["samples"]["2"][0]["negatives"]] == [4, 4, 4]
    assert drawn["samples"]["2"] != samples["samples"]["2"]


def test_one_k_drawn_alone_is_that_k_of_the_all_k_draw(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=30, n_test=6)
    root = str(tmp_path / "VOCdevkit")
    _, labels = read_voc07_labels(root, "trainval", CLASSES)
    every_k = draw_lowshot_samples(labels, [1, 2], num_samples=3, seed=11)
    for k in (1, 2):
        draw_voc07_lowshot_samples({"num_samples": 3, "seed": 11}, k, "", root, CLASSES, str(tmp_path / "k.json"),
                                   LOG)
        alone = load_lowshot_samples(tmp_path / "k.json")
        assert alone["k_values"] == [k] and alone["samples"] == {str(k): every_k["samples"][str(k)]}


def test_published_samples_param_covers_that_ks_files_only(tmp_path):
    for sample in (1, 2):
        for k in (1, 2):
            published_sample_path(tmp_path, sample, k).write_text(f'{{"{sample}": {k}}}')
    first = {k: published_samples_param(str(tmp_path), k) for k in (1, 2)}
    assert first[1]["folder"] == str(tmp_path) and first[1]["digest"] != first[2]["digest"]
    published_sample_path(tmp_path, 1, 2).write_text('{"edited": 1}')
    assert published_samples_param(str(tmp_path), 1) == first[1]  # editing k=2's files does not re-read k=1
    assert published_samples_param(str(tmp_path), 2) != first[2]
    assert published_samples_param("", 1) == ""
    with pytest.raises(ValueError, match=r"train_targets_sample<s>_k12\.json files for k=12"):
        published_samples_param(str(tmp_path), 12)
