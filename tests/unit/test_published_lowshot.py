"""Track 2 from the challenge's published low-shot samples (evaluation.voc07_lowshot.published_samples): the check
at DAG time that the folder and its files exist, the samples job reading them, and the leaderboard's note of the
sample source. The test builds the published tree in its real layout:
iccv_challenge/low_shot_voc07/low_shot_train/train_targets_sample{1..5}_k{k}.json, {image id: {class: 1 | 0 | -1}}."""
from __future__ import annotations

import json
import logging

from pathlib import Path

import numpy as np
import pytest
import yaml

from layouts_fixture import make_tiny_voc07

from ssl_challenge.core.config import ConfigError
from ssl_challenge.evaluation.lowshot import evaluate_lowshot, load_lowshot_samples
from ssl_challenge.plan.config_checks import check_data_sources, check_published_lowshot_samples, validate_config
from ssl_challenge.reporting.leaderboard import lowshot_samples_note, write_tables, measured_table, published_table
from ssl_challenge.stages.lowshot_track import draw_voc07_lowshot_samples

CLASSES = ["cat", "dog", "bird"]
K_VALUES = [1, 2]
NUM_SAMPLES = 5
LOG = logging.getLogger("test")
REPO = Path(__file__).resolve().parents[2]


def published_tree(root, ids, labels, k_values=K_VALUES, num_samples=NUM_SAMPLES, seed=0):
    """The challenge's tree under ``root``; returns (folder, {(k, sample, class): (positive rows, negative rows)})."""
    folder = root / "iccv_challenge" / "low_shot_voc07" / "low_shot_train"
    folder.mkdir(parents=True)
    rng, expected = np.random.default_rng(seed), {}
    for k in k_values:
        for sample in range(1, num_samples + 1):
            targets = {image_id: {name: -1 for name in CLASSES} for image_id in ids}
            for c, name in enumerate(CLASSES):
                positives = rng.choice(np.flatnonzero(labels[:, c] == 1), k, replace=False)
                negatives = rng.choice(np.flatnonzero(labels[:, c] == -1), (len(CLASSES) - 1) * k, replace=False)
                for row in positives:
                    targets[ids[row]][name] = 1
                for row in negatives:
                    targets[ids[row]][name] = 0
                expected[k, sample, c] = (sorted(positives.tolist()), sorted(negatives.tolist()))
            (folder / f"train_targets_sample{sample}_k{k}.json").write_text(json.dumps(targets))
    return folder, expected


def lowshot_options(folder) -> dict:
    return {"published_samples": str(folder), "k_values": K_VALUES, "num_samples": NUM_SAMPLES, "seed": 0}


@pytest.fixture
def voc(tmp_path):
    truth = make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=40, n_test=12)
    return tmp_path / "VOCdevkit", truth


def test_the_dag_check_names_a_missing_folder_or_file(tmp_path, voc):
    _, truth = voc
    check_published_lowshot_samples({"published_samples": "", "k_values": K_VALUES, "num_samples": NUM_SAMPLES})
    missing = tmp_path / "nowhere" / "low_shot_train"
    with pytest.raises(ConfigError, match="evaluation.voc07_lowshot.published_samples") as error:
        check_published_lowshot_samples(lowshot_options(missing))
    assert str(missing) in str(error.value) and "does not exist" in str(error.value)
    folder, _ = published_tree(tmp_path, truth["trainval"]["ids"], truth["trainval"]["labels"])
    check_published_lowshot_samples(lowshot_options(folder))  # complete: passes
    (folder / "train_targets_sample5_k2.json").unlink()
    with pytest.raises(ConfigError, match="train_targets_sample5_k2.json") as error:
        check_published_lowshot_samples(lowshot_options(folder))
    assert str(folder) in str(error.value) and "sample4" not in str(error.value)
    with pytest.raises(ConfigError, match="train_targets_sample1_k4.json"):  # a k of k_values without its files
        check_published_lowshot_samples({**lowshot_options(folder), "k_values": [1, 4]})


def test_the_check_runs_with_the_data_sources_before_any_job(tmp_path):
    """rules/common.smk calls check_data_sources at DAG time: the embedded default with the key pointed at a
    missing folder fails there, naming it."""
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                             REPO / "workflow" / "schemas" / "config.schema.yaml")
    check_data_sources(config, embedded_built=True)
    config["evaluation"]["voc07_lowshot"]["published_samples"] = str(tmp_path / "low_shot_train")
    with pytest.raises(ConfigError, match="low_shot_train': the folder does not exist"):
        check_data_sources(config, embedded_built=True)


def test_the_samples_job_reads_the_published_files_and_the_tables_say_so(tmp_path, voc):
    root, truth = voc
    ids, labels = truth["trainval"]["ids"], truth["trainval"]["labels"]
    folder, expected = published_tree(tmp_path, ids, labels)
    draw_options = {"num_samples": NUM_SAMPLES, "seed": 0}
    results = {}
    for source, published in (("published", str(folder)), ("drawn", "")):
        output = tmp_path / f"{source}_k2.json"
        draw_voc07_lowshot_samples(draw_options, 2, published, str(root), CLASSES, str(output), LOG)
        samples = load_lowshot_samples(output)
        if published:
            assert samples["seed"] is None and str(folder) in samples["source"]
            for sample in range(1, NUM_SAMPLES + 1):
                draw = samples["samples"]["2"][sample - 1]
                assert [(draw["positives"][c], draw["negatives"][c]) for c in range(3)] == [
                    expected[2, sample, c] for c in range(3)]
        else:
            assert samples["seed"] == 0
        rng = np.random.default_rng(1)
        train_x = rng.normal(size=(len(ids), 6)) + labels[:, :1]
        test_x = rng.normal(size=(len(truth["test"]["ids"]), 6)) + truth["test"]["labels"][:, :1]
        result = evaluate_lowshot(train_x, labels, test_x, truth["test"]["labels"], samples, [0.1, 1.0], CLASSES,
                                  n_jobs=1)
        results[source] = tmp_path / "eval" / source / "feat5.json"
        results[source].parent.mkdir(parents=True)
        results[source].write_text(json.dumps({**result, "layer": "feat5"}))

    published_note = lowshot_samples_note({"m": {"voc07_lowshot": [str(results["published"])]}})
    assert published_note == "Low-shot samples (voc07_lowshot): published samples (the challenge's files)."
    drawn_note = lowshot_samples_note({"m": {"voc07_lowshot": [str(results["drawn"])]}})
    assert drawn_note == "Low-shot samples (voc07_lowshot): drawn (random seed 0)."
    assert lowshot_samples_note({"m": {"voc07_svm": []}}) == ""

    evaluations = {"m": {"voc07_lowshot": [str(results["published"])]}}
    outputs = [str(tmp_path / "tables" / f"leaderboard{ext}") for ext in (".csv", ".md", ".tex")]
    (tmp_path / "tables").mkdir()
    write_tables(measured_table(evaluations), published_table(), outputs, lowshot_samples_note(evaluations))
    measured_md = (tmp_path / "tables" / "leaderboard.md").read_text().split("## Published reference figures")[0]
    assert measured_md.strip().splitlines()[-1].endswith(published_note)
    measured_tex = (tmp_path / "tables" / "leaderboard.tex").read_text().split(r"\end{table}")[0]
    assert "published samples (the challenge" in measured_tex.split(r"\end{tabular}")[1]
