"""End to end after the smoke run: the HTML report holds every table and figure; external checkpoints in each key
layout go through every track."""
from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import run_snakemake  # noqa: E402
from dryrun import planned_jobs  # noqa: E402

pytestmark = pytest.mark.slow
SMOKE = ["--configfile", "config/smoke.yaml"]
SMOKE_TRAINED = ["random", "rot", "dc", "odc", "cls", "codc2@r1.dc", "codc2@r1.rot"]


def embedded_items(report_html: str) -> dict[str, bytes]:
    """Every file the self-contained report embeds (``data:<mime>;charset=utf8;filename=<name>;base64,...``)."""
    pattern = r"data:[\w/+.-]+;(?:charset=[\w-]+;)?filename=([^;\"]+);base64,([A-Za-z0-9+/=]+)"
    return {match.group(1): base64.b64decode(match.group(2)) for match in re.finditer(pattern, report_html)}


def test_report_holds_every_table_and_figure(smoke_copy):
    run_snakemake(smoke_copy, "--cores", "2", "report_items", *SMOKE, timeout=900)
    results = smoke_copy / "results"
    for model in SMOKE_TRAINED:
        assert (results / "report" / "training_curves" / f"{model}.png").stat().st_size > 5000, model
    for table in ("leaderboard", "codc_ablation"):
        sidecar = pd.read_json(results / "tables" / f"{table}.provenance.json", typ="series")
        cells = sidecar["cells"]
        assert cells and all(Path(smoke_copy, cell["result_file"]).is_file() for cell in cells)
        assert all(run and run["code_digest"] for cell in cells for run in cell["training"].values()), table
    run_snakemake(smoke_copy, "--report", "results/report.html", "report_items", *SMOKE, timeout=600)
    report_html = (results / "report.html").read_text()
    embedded = embedded_items(report_html)
    files = {name: results / "report" / "tables" / name
             for name in ("leaderboard.html", "codc_ablation.html", "dc_vs_odc.html")}
    files.update({name: results / "plots" / name for name in ("lowshot.png", "dc_vs_odc.png")})
    files.update({f"{model}.png": results / "report" / "training_curves" / f"{model}.png" for model in SMOKE_TRAINED})
    for name, path in files.items():  # each table page, plot and training-curve figure, byte for byte
        assert embedded.get(name) == path.read_bytes(), name
    page = (results / "report" / "tables" / "leaderboard.html").read_text()
    assert "Provenance of each measured figure" in page and "codc2@r1.concat" in page
    assert "results/eval/dc/voc07_svm/feat5.json" in page


def save_in_layout(state: dict, layout: str, path: Path) -> None:
    trunk = {key: value for key, value in state.items() if not key.startswith("fc.")}
    if layout == "torchvision":
        content = state
    elif layout == "openselfsup":
        content = {"state_dict": {**{f"backbone.{key}": value for key, value in trunk.items()},
                                  "head.fc_cls.weight": torch.zeros(2, 2)}}
    else:
        content = {"classy_state_dict": {"base_model": {"model": {
            "trunk": {f"_feature_blocks.{key}": value for key, value in trunk.items()}, "heads": {}}}}}
    torch.save(content, path)


def test_external_checkpoints_in_each_layout_go_through_every_track(smoke_copy, tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(3)
    state = resnet50(weights=None).state_dict()
    smoke = yaml.safe_load((smoke_copy / "config" / "smoke.yaml").read_text())
    models = {}
    for layout in ("torchvision", "openselfsup", "vissl"):
        path = tmp_path / f"{layout}.pth"
        save_in_layout(state, layout, path)
        models[f"ext_{layout}"] = {"method": "external", "backbone": {"name": "resnet50"}, "epochs": 0,
                                   "optimizer": {"lr": 0.1}, "method_options": {"weights": str(path),
                                                                                "layout": layout}}
    config = dict(smoke, models=models, codc={}, ablation={"experiments": []})
    config["evaluation"]["places205_linear"]["mode"] = "cached"
    config_path = tmp_path / "external.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(smoke_copy, "--cores", "2", "all_tracks", "--configfile", str(config_path), timeout=1500)
    table = pd.read_csv(smoke_copy / "results" / "tables" / "leaderboard.csv")
    measured = table[table["section"] == "measured"].set_index("model")
    assert set(measured.index) == set(models)
    for track in ("voc07_svm", "voc07_lowshot", "places205_linear"):
        assert measured[track].between(0, 100).all(), track
        # the same weights in three layouts: the same features, the same scores
        assert measured[track].nunique() == 1, (track, measured[track].to_dict())
    # A changed checkpoint makes its model stale (the file is an input of the conversion).
    save_in_layout(resnet50(weights=None).state_dict(), "vissl", tmp_path / "vissl.pth")
    jobs = planned_jobs(run_snakemake(smoke_copy, "-n", "all_tracks", "--configfile", str(config_path)).stdout)
    assert {job.model for job in jobs if job.rule == "pretrain"} == {"ext_vissl"}
