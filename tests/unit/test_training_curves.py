"""Training curves from metrics records: the series on hand-made records, and the figure file."""
from __future__ import annotations

import json

from ssl_challenge.reporting.training_curves import curves, plot_training_curves

ODC_RECORDS = [
    {"kind": "iteration", "epoch": 0, "iteration": 4, "loss": 2.0, "label_change_ratio": 0.5, "small_clusters": 0.0},
    {"kind": "epoch", "epoch": 1, "iteration": 4, "loss": 2.1, "label_change_ratio": 0.4, "small_clusters": 0.5,
     "cluster_sizes": [3, 0, 5]},
    {"kind": "iteration", "epoch": 1, "iteration": 10, "loss": 1.5, "label_change_ratio": 0.2,
     "small_clusters": 0.0},
    {"kind": "epoch", "epoch": 2, "iteration": 10, "loss": 1.6, "label_change_ratio": 0.1, "small_clusters": 0.5,
     "cluster_sizes": [4, 2, 2]},
]


def test_series_by_hand():
    series = curves(ODC_RECORDS)
    assert series["loss"] == [(4, 2.0), (10, 1.5)] and series["epoch_loss"] == [(4, 2.1), (10, 1.6)]
    assert series["label_change_ratio"] == [(1, 0.4), (2, 0.1)]
    # epoch means x the epoch's iterations: 0.5 x 4 and 0.5 x 6
    assert series["small_cluster_events"] == [(1, 2.0), (2, 3.0)]
    assert series["cluster_sizes"] == {1: [3, 0, 5], 2: [4, 2, 2]}
    assert series["nmi_previous"] == []


def test_dc_and_codc_records():
    dc = [{"kind": "epoch", "epoch": 1, "iteration": 3, "loss": 1.0, "nmi_previous": None, "cluster_sizes": [2, 1]},
          {"kind": "epoch", "epoch": 2, "iteration": 6, "loss": 0.9, "nmi_previous": 0.75, "cluster_sizes": [1, 2]}]
    assert curves(dc)["nmi_previous"] == [(2, 0.75)]
    codc = [{"kind": "epoch", "epoch": 1, "iteration": 2, "loss": 1.0, "online_label_change_ratio": 0.3,
             "online_small_clusters": 1.0, "online_cluster_sizes": [1, 1]}]
    series = curves(codc)
    assert series["label_change_ratio"] == [(1, 0.3)] and series["small_cluster_events"] == [(1, 2.0)]
    assert series["cluster_sizes"] == {1: [1, 1]}


def test_figure_is_written_for_a_clustering_model_and_an_untrained_one(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(record) + "\n" for record in ODC_RECORDS))
    plot_training_curves(metrics, "odc", tmp_path / "odc.png")
    assert (tmp_path / "odc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")  # the random baseline trains 0 epochs
    assert plot_training_curves(empty, "random", tmp_path / "random.png")["loss"] == []
    assert (tmp_path / "random.png").stat().st_size > 1000
