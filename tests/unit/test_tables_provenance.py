"""Per-cell provenance: each measured figure traced to its result file and to the training run behind it."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ssl_challenge.reporting.report_pages import table_page
from ssl_challenge.reporting.cell_provenance import (ablation_cells, file_sha256, json_digest, leaderboard_cells,
                                             training_run, write_sidecar)

CONFIG = {"evaluation": {"voc07_svm": {"costs": [1.0]}, "places205_linear": {"epochs": 2}},
          "features": {"layers": ["feat4", "feat5"]}, "data": {"source": "embedded"}}


def make_model(results: Path, name: str, weights: bytes, run: str = "run1", snapshot: bytes | None = None) -> None:
    run_dir = results / "models" / name / "runs" / run
    run_dir.mkdir(parents=True)
    (results / "models" / name / "model.pth").write_bytes(weights)
    (run_dir / "model.pth").write_bytes(weights)
    if snapshot is not None:
        (run_dir / "snapshots").mkdir()
        (run_dir / "snapshots" / "epoch_0001.pth").write_bytes(snapshot)
    (run_dir / "identity.json").write_text(json.dumps({
        "model": {"method": name}, "pretrain_data": {"image_size": 32}, "code": f"code-{name}",
        "images": "images-digest", "data_files": {"manifest.json": "m1"}, "input_files": {}}))


def make_result(results: Path, model: str, layer: str, value: float) -> str:
    path = results / "eval" / model / "voc07_svm" / f"{layer}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"layer": layer, "map": value}))
    return str(path)


@pytest.fixture
def results(tmp_path):
    results = tmp_path / "results"
    make_model(results, "dc", b"dc weights", snapshot=b"dc after epoch 1")
    make_model(results, "rot", b"rot weights")
    (results / "models" / "dc@e1").mkdir(parents=True)
    (results / "models" / "dc@e1" / "model.pth").write_bytes(b"dc after epoch 1")
    return results


def test_training_run_is_found_by_the_model_file_bytes(results):
    run = training_run(results / "models" / "dc")
    assert run["run"].endswith("models/dc/runs/run1") and run["code_digest"] == "code-dc"
    assert run["config_digest"] == json_digest({"model": {"method": "dc"}, "pretrain_data": {"image_size": 32}})
    assert run["data_digest"] == json_digest({"images": "images-digest", "data_files": {"manifest.json": "m1"},
                                              "input_files": {}})
    assert training_run(results / "models" / "dc@e1")["run"] == run["run"]  # found among dc's snapshots
    (results / "models" / "rot" / "model.pth").write_bytes(b"retrained elsewhere")
    assert training_run(results / "models" / "rot") is None  # no run folder wrote these bytes


def test_leaderboard_cells_trace_the_best_layer_and_the_concatenation_members(results, tmp_path):
    evaluations = {}
    for model, (low, high) in {"dc": (40.0, 50.0), "rot": (45.0, 42.0), "x.concat": (52.0, 51.0)}.items():
        evaluations[model] = {"voc07_svm": [make_result(results, model, "feat4", low),
                                            make_result(results, model, "feat5", high)]}
    table = tmp_path / "leaderboard.csv"
    pd.DataFrame([{"section": "measured", "model": "dc", "voc07_svm": 50.0, "voc07_svm_layer": "feat5"},
                  {"section": "measured", "model": "rot", "voc07_svm": 45.0, "voc07_svm_layer": "feat4"},
                  {"section": "measured", "model": "x.concat", "voc07_svm": 52.0, "voc07_svm_layer": "feat4"},
                  {"section": "published", "model": "ODC", "voc07_svm": 78.4}]).to_csv(table, index=False)
    cells = leaderboard_cells(table, evaluations, {"x.concat": ["dc", "rot"]}, CONFIG, results)
    assert [(c["row"], c["value"], Path(c["result_file"]).name) for c in cells] == [
        ("dc", 50.0, "feat5.json"), ("rot", 45.0, "feat4.json"), ("x.concat", 52.0, "feat4.json")]
    assert cells[0]["result_sha256"] == file_sha256(evaluations["dc"]["voc07_svm"][1])
    assert set(cells[2]["training"]) == {"dc", "rot"}
    assert cells[2]["training"]["rot"]["code_digest"] == "code-rot"
    assert cells[0]["evaluation"]["code_digest"]  # the digest of svm_full.py's import closure
    changed = dict(CONFIG, evaluation={"voc07_svm": {"costs": [0.5]}})
    assert (leaderboard_cells(table, evaluations, {}, changed, results)[0]["evaluation"]["config_digest"]
            != cells[0]["evaluation"]["config_digest"])
    sidecar = tmp_path / "leaderboard.provenance.json"
    write_sidecar(sidecar, "leaderboard", cells)
    page = table_page("Leaderboard", table, sidecar)
    assert "Provenance of each measured figure" in page and "code-rot" in page and "78.40" in page
    assert evaluations["dc"]["voc07_svm"][1] in page


def test_ablation_cells_follow_the_table_columns(results):
    before = [make_result(results, "dc", "feat4", 40.0), make_result(results, "dc", "feat5", 50.0)]
    concat = [make_result(results, "e@r1.concat", "feat5", 55.0)]
    cells = ablation_cells([["e", "dc", "before", before], ["e", "dc", "concatenate", concat]],
                           {"e@r1.concat": ["dc"]}, CONFIG, results)
    assert [(c["row"], c["column"], c["value"], c["model"]) for c in cells] == [
        ("before CODC", "e: dc", 50.0, "dc"), ("concatenate", "e: dc", 55.0, "e@r1.concat")]
    assert cells[1]["training"]["dc"]["code_digest"] == "code-dc"
