from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from ssl_challenge.reporting.leaderboard import PUBLISHED_ROWS, write_leaderboard


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


def lowshot_result(layer, means):
    per_k = {str(k): {"mean": m, "min": m - 1, "max": m + 1, "std": 0.5, "cost": 1.0} for k, m in means.items()}
    return {"layer": layer, "per_k": per_k, "track_score": sum(means.values()) / len(means)}


def test_leaderboard_takes_the_best_layer_and_keeps_published_rows_apart(tmp_path):
    evaluations = {}
    for model, offset in (("random", 0.0), ("rot", 10.0)):
        base = tmp_path / "eval" / model
        evaluations[model] = {
            "voc07_svm": [write(base / f"svm_{layer}.json", {"layer": layer, "map": score + offset})
                          for layer, score in (("feat4", 40.0), ("feat5", 45.0))],
            "voc07_lowshot": [write(base / "low_feat5.json", lowshot_result("feat5", {1: 10 + offset, 2: 20 + offset}))],
            "places205_linear": [write(base / "probe.json", {"top1": {"feat4": 50.0 + offset, "feat5": 30.0}})],
        }
    bench = tmp_path / "benchmarks" / "pretrain"
    bench.mkdir(parents=True)
    (bench / "rot.tsv").write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t100.0\n")
    outputs = [str(tmp_path / "tables" / f"leaderboard{ext}") for ext in (".csv", ".md", ".tex")]
    measured = write_leaderboard(evaluations, str(tmp_path / "benchmarks"), outputs,
                                 str(tmp_path / "tables" / "stage_times.csv"), str(tmp_path / "low.png"),
                                 logging.getLogger("test"))
    row = measured.set_index("model").loc["rot"]
    assert row["voc07_svm"] == 55.0 and row["voc07_svm_layer"] == "feat5"
    assert row["voc07_lowshot"] == 25.0
    assert row["places205_linear"] == 60.0 and row["places205_linear_layer"] == "feat4"
    table = pd.read_csv(outputs[0])
    assert (table["section"] == "published").sum() == len(PUBLISHED_ROWS)
    assert set(table.loc[table["section"] == "measured", "model"]) == {"random", "rot"}
    markdown = (tmp_path / "tables" / "leaderboard.md").read_text()
    assert markdown.index("Measured") < markdown.index("Published")
    # Under the measured table, a line says which choices were made on test data (as the reference protocol does).
    measured_part = markdown.split("## Published reference figures")[0]
    note = measured_part.strip().splitlines()[-1]
    assert note.startswith("Selected on test data, as in the reference protocol. VOC07 SVM: each model's layer "
                           "with the best test mAP")
    assert ("VOC07 low-shot: for each k the cost with the best test mAP averaged over the samples, then the "
            "layer") in note
    assert "Places205: the layer with the best top-1 on val, which is Places205's test split" in note
    assert "ImageNet" not in note  # no ImageNet column, no ImageNet selection
    tex = (tmp_path / "tables" / "leaderboard.tex").read_text()
    measured_tex = tex.split(r"\end{table}")[0]
    assert r"\end{tabular}" in measured_tex and "Selected on test data" in measured_tex.split(r"\end{tabular}")[1]
    assert "Selected on test data" not in tex.split(r"\end{table}")[1]  # the published table is not ours to qualify
    assert "Selected" not in (tmp_path / "tables" / "leaderboard.csv").read_text()  # the CSV holds the figures only
    times = pd.read_csv(tmp_path / "tables" / "stage_times.csv")
    assert times.loc[0, "seconds"] == 12.5 and times.loc[0, "stage"] == "pretrain"


def test_imagenet_column_appears_only_when_the_track_ran(tmp_path):
    def evaluations(with_imagenet):
        base = tmp_path / ("with" if with_imagenet else "without")
        files = {"voc07_svm": [write(base / "svm.json", {"layer": "feat5", "map": 40.0})],
                 "places205_linear": [write(base / "probe.json", {"top1": {"feat5": 30.0}})]}
        if with_imagenet:
            files["imagenet_linear"] = [write(base / "imagenet.json", {"top1": {"feat4": 21.5, "feat5": 20.0}})]
        return {"rot": files, "rot@r1.concat": {"voc07_svm": files["voc07_svm"]}}

    outputs = [str(tmp_path / "tables" / f"leaderboard{ext}") for ext in (".csv", ".md", ".tex")]
    (tmp_path / "benchmarks").mkdir(exist_ok=True)
    arguments = (str(tmp_path / "benchmarks"), outputs, str(tmp_path / "times.csv"), str(tmp_path / "low.png"),
                 logging.getLogger("test"))
    measured = write_leaderboard(evaluations(True), *arguments).set_index("model")
    assert measured.loc["rot", "imagenet_linear"] == 21.5 and measured.loc["rot", "imagenet_linear_layer"] == "feat4"
    assert pd.isna(measured.loc["rot@r1.concat", "imagenet_linear"])  # no trunk: no ImageNet probe
    markdown = (tmp_path / "tables" / "leaderboard.md").read_text()
    assert "imagenet_linear" in markdown and "ImageNet linear: the layer with the best top-1 on val" in markdown
    assert "imagenet_linear" not in write_leaderboard(evaluations(False), *arguments).columns


def test_detection_column_is_layer_free_and_empty_for_a_concatenation(tmp_path):
    base = tmp_path / "eval"
    svm = [write(base / "svm.json", {"layer": "feat5", "map": 40.0})]
    evaluations = {"rot": {"voc07_svm": svm, "voc07_detection": [write(base / "det.json", {"map": 12.345})]},
                   "rot@r1.concat": {"voc07_svm": svm}}
    outputs = [str(tmp_path / "tables" / f"leaderboard{ext}") for ext in (".csv", ".md", ".tex")]
    (tmp_path / "benchmarks").mkdir()
    measured = write_leaderboard(evaluations, str(tmp_path / "benchmarks"), outputs, str(tmp_path / "times.csv"),
                                 str(tmp_path / "low.png"), logging.getLogger("test")).set_index("model")
    assert measured.loc["rot", "voc07_detection"] == 12.345 and "voc07_detection_layer" not in measured.columns
    assert pd.isna(measured.loc["rot@r1.concat", "voc07_detection"])  # no trunk: no detector
    assert "| 12.35 |" in (tmp_path / "tables" / "leaderboard.md").read_text()


def test_the_selection_note_names_each_tracks_choice_in_the_order_asked():
    from ssl_challenge.reporting.table_formats import latex_table, selection_note

    note = selection_note(["places205_linear", "voc07_svm"])
    assert note.index("Places205") < note.index("VOC07 SVM") and "low-shot" not in note
    with pytest.raises(ValueError, match="voc07_detection"):
        selection_note(["voc07_detection"])
    assert selection_note([]) == ""  # no selected figure, nothing to say
    frame = pd.DataFrame({"model": ["rot"], "voc07_svm": [40.0]})
    assert "footnotesize" not in latex_table(frame, "caption")
    assert r"{\footnotesize Selected on test data" in latex_table(frame, "caption", note)
