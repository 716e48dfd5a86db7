"""The DC vs ODC table: structure, time to accuracy, the benchmark files, the plot."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from ssl_challenge.reporting.dc_vs_odc import (benchmark_seconds, dc_vs_odc_table, plot_time_to_accuracy,
                                            seconds_to_reach, write_dc_vs_odc)


def test_dc_vs_odc_table_plot_and_spec(tmp_path):
    def model_file(path, seconds, epochs):
        torch.save({"backbone": {"conv.weight": torch.ones(1)}, "backbone_config": {"name": "small_resnet"},
                    "device": "cpu", "train_seconds": seconds, "epochs": epochs}, path)
        return str(path)

    def svm_files(name, maps):
        paths = []
        for layer, value in maps.items():
            path = tmp_path / f"{name}_{layer}.json"
            path.write_text(json.dumps({"layer": layer, "map": value, "track_score": value / 2}))
            paths.append(str(path))
        return paths

    spec = {
        method: {
            "method": method,
            "model": model_file(tmp_path / f"{method}.pth", seconds, 4),
            "voc07_svm": svm_files(method, {"feat4": score - 5, "feat5": score}),
            "voc07_lowshot": svm_files(f"{method}_lowshot", {"feat5": score}),
            "snapshots": {f"{method}@e2": {"model": model_file(tmp_path / f"{method}_e2.pth", seconds / 2, 2),
                                           "voc07_svm": svm_files(f"{method}_e2", {"feat5": score - 10})}},
        }
        for method, seconds, score in (("dc", 100.0, 40.0), ("odc", 60.0, 45.0))
    }
    outputs = [str(tmp_path / "dc_vs_odc.csv"), str(tmp_path / "dc_vs_odc.md")]
    frame = write_dc_vs_odc(spec, outputs, str(tmp_path / "dc_vs_odc.png"), logging.getLogger("test"))
    assert list(frame.columns) == ["model", "method", "backbone", "device", "pretrain_seconds", "epochs",
                                   "voc07_svm", "voc07_lowshot", "seconds_to_dc_final"]
    odc = frame[frame.method == "odc"].iloc[0]
    assert odc.pretrain_seconds == 60.0 and odc.voc07_svm == 45.0 and odc.voc07_lowshot == 22.5
    # DC's final mAP is 40; ODC's curve (30 s, 35) -> (60 s, 45) crosses it half-way: 45 s. DC reaches it at 100 s.
    assert odc.seconds_to_dc_final == pytest.approx(45.0)
    assert frame[frame.method == "dc"].iloc[0].seconds_to_dc_final == pytest.approx(100.0)
    assert (tmp_path / "dc_vs_odc.png").stat().st_size > 0
    markdown = (tmp_path / "dc_vs_odc.md").read_text()
    assert "| odc | odc | small_resnet | cpu | 60.00 | 4 | 45.00 | 22.50 | 45.00 |" in markdown
    note = markdown.strip().splitlines()[-1]  # the line under the table
    assert note.startswith("Selected on test data") and "VOC07 SVM" in note and "VOC07 low-shot" in note
    assert "Places205" not in note
    with pytest.raises(ValueError, match="missing key"):
        dc_vs_odc_table([{"method": "dc"}])
    plot_time_to_accuracy({}, str(tmp_path / "empty.png"))
    assert (tmp_path / "empty.png").exists()


def test_seconds_to_reach_interpolates_and_says_never():
    curve = [(100.0, 30.0), (10.0, 10.0), (50.0, 20.0)]  # unsorted on purpose
    assert seconds_to_reach(curve, 15.0) == pytest.approx(30.0)  # between (10, 10) and (50, 20)
    assert seconds_to_reach(curve, 20.0) == pytest.approx(50.0)
    assert seconds_to_reach(curve, 5.0) == pytest.approx(10.0)  # already there at the first point
    assert seconds_to_reach(curve, 31.0) is None


def test_benchmark_seconds_reads_snakemakes_benchmark_file(tmp_path):
    path = tmp_path / "dc.tsv"
    path.write_text("s\th:m:s\tmax_rss\n123.45\t0:02:03\t100.0\n")
    assert benchmark_seconds(str(path)) == pytest.approx(123.45)
