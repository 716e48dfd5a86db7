"""The lowshot_samples stage: the challenge's published samples (evaluation.voc07_lowshot.published_samples) on a
small tree in the FAIR benchmark's format, or samples drawn with (C - 1) x k negatives."""
from __future__ import annotations

import json
import logging

import numpy as np

from layouts_fixture import make_tiny_voc07
from ssl_challenge.evaluation.lowshot import load_lowshot_samples, published_sample_path
from ssl_challenge.evaluation.lowshot_track import draw_voc07_lowshot_samples

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
    config = {"k_values": [1, 2], "num_samples": 2, "seed": 0, "published_samples": str(folder)}
    output = tmp_path / "samples.json"
    draw_voc07_lowshot_samples(config, str(tmp_path / "VOCdevkit"), CLASSES, str(output), LOG)
    samples = load_lowshot_samples(output)
    assert samples["seed"] is None and str(folder) in samples["source"]
    for (k, sample, c), (positives, negatives) in expected.items():
        draw = samples["samples"][str(k)][sample - 1]
        assert draw["positives"][c] == positives and draw["negatives"][c] == negatives

    drawn_output = tmp_path / "drawn.json"
    draw_voc07_lowshot_samples({**config, "published_samples": ""}, str(tmp_path / "VOCdevkit"), CLASSES,
                               str(drawn_output), LOG)
    drawn = load_lowshot_samples(drawn_output)
    assert drawn["seed"] == 0 and drawn["negatives_per_positive"] == 2  # (C - 1) x k with C = 3
    assert [len(rows) for rows in drawn["samples"]["2"][0]["negatives"]] == [4, 4, 4]
    assert drawn["samples"] != samples["samples"]
