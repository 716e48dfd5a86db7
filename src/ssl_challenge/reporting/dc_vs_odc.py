"""The DC vs ODC comparison: pretraining time, epochs and tracks per model, and time to DC's final accuracy.

Times are the training loop's seconds recorded in each model file (and, when given, the whole job's wall time from
its benchmark file); the time-to-accuracy curve of a model goes through its evaluated snapshots.
"""
from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from ..core.io import atomic_path, write_text_atomic
from .table_formats import best_layer, latex_table, markdown_table, paths_by_suffix, read_json, selection_note

DC_VS_ODC_COLUMNS = ["model", "method", "backbone", "device", "pretrain_seconds", "epochs", "voc07_svm",
                     "voc07_lowshot"]
DC_VS_ODC_OPTIONAL = ["wall_seconds", "seconds_to_dc_final"]
# The VOC07 columns, and the snapshots' points behind seconds_to_dc_final, are best layers chosen on test data.
SELECTION_NOTE = selection_note(["voc07_svm", "voc07_lowshot"])


def dc_vs_odc_table(rows: Sequence[dict]) -> pd.DataFrame:
    """``rows``: dicts with method, backbone, device, pretrain_seconds, epochs, voc07_svm, voc07_lowshot (and
    optionally model) -> a frame with exactly ``DC_VS_ODC_COLUMNS``."""
    required = [column for column in DC_VS_ODC_COLUMNS if column != "model"]
    for row in rows:
        missing = [column for column in required if column not in row]
        if missing:
            raise ValueError(f"DC vs ODC row {row}: missing key(s) {missing}")
    optional = [column for column in DC_VS_ODC_OPTIONAL if any(column in row for row in rows)]
    frame = pd.DataFrame([{column: row.get(column, row["method"]) if column == "model" else row.get(column)
                           for column in DC_VS_ODC_COLUMNS + optional} for row in rows],
                         columns=DC_VS_ODC_COLUMNS + optional)
    for column in ["pretrain_seconds", "voc07_svm", "voc07_lowshot"] + optional:
        frame[column] = frame[column].astype(float)
    return frame


def seconds_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first time on a (seconds, mAP) curve at which the mAP reaches ``target``, interpolating linearly
    between measured points (the curve starts at (0, first point's mAP) only if a point at 0 was measured);
    None when it never does."""
    ordered = sorted((float(seconds), float(score)) for seconds, score in curve)
    previous = None
    for seconds, score in ordered:
        if score >= target:
            if previous is None or previous[1] >= score:
                return seconds
            fraction = (target - previous[1]) / (score - previous[1])
            return previous[0] + fraction * (seconds - previous[0])
        previous = (seconds, score)
    return None


def benchmark_seconds(path: str) -> float:
    """Wall seconds of a Snakemake benchmark file (its first run)."""
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0])


def write_dc_vs_odc_table(frame: pd.DataFrame, outputs: Sequence[str]) -> None:
    """``.csv`` and ``.md`` (and ``.tex`` when one is among ``outputs``), atomically."""
    csv_path, md_path = paths_by_suffix(outputs, (".csv", ".md"))
    with atomic_path(csv_path) as temporary:
        frame.to_csv(temporary, index=False)
    write_text_atomic(md_path, "\n".join([
        "# DC vs ODC", "", "Measured by this pipeline: pretraining time (training loop, seconds), epochs, VOC07 "
        "SVM mAP (best layer) and low-shot track score (best layer), x100; `wall_seconds`: the whole job (benchmark "
        "file); `seconds_to_dc_final`: training seconds until the VOC07 SVM mAP first reaches DC's final one, "
        "interpolated between evaluated snapshots (empty: never).", "", markdown_table(frame), "", SELECTION_NOTE,
        ""]))
    tex = [str(path) for path in outputs if str(path).endswith(".tex")]
    if tex:
        write_text_atomic(tex[0], latex_table(frame, "DC vs ODC, measured by this pipeline", SELECTION_NOTE))


def time_to_accuracy_figure(points: dict[str, Sequence[tuple[float, float]]]):
    """VOC07 SVM mAP against pretraining seconds, one line per model (points sorted by time), each its own colour
    and marker, the legend beside the axes; a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot_styles import legend_beside, line_styles

    figure, axis = plt.subplots(figsize=(7.5, 4))
    drawn = [(model, sorted((float(seconds), float(score)) for seconds, score in model_points))
             for model, model_points in points.items() if model_points]
    for (model, ordered), (colour, marker) in zip(drawn, line_styles(len(drawn))):
        axis.plot([p[0] for p in ordered], [p[1] for p in ordered], color=colour, marker=marker, label=model)
    if not drawn:
        axis.text(0.5, 0.5, "no DC or ODC model", ha="center", va="center", transform=axis.transAxes)
        axis.set_xticks([])
        axis.set_yticks([])
    axis.set_xlabel("pretraining time (s, the training loop's clock)")
    axis.set_ylabel("VOC07 SVM mAP (%), best layer")
    models = ", ".join(model for model, _ in drawn) if len(drawn) <= 4 else f"{len(drawn)} DC and ODC models"
    axis.set_title(f"Time to accuracy, measured: {models or 'none'}\n(snapshots and final model; each point its "
                   "best layer by test mAP)", fontsize=10)
    axis.grid(alpha=0.3)
    legend_beside(axis, "model")
    return figure


def plot_time_to_accuracy(points: dict[str, Sequence[tuple[float, float]]], output_png: str) -> None:
    """:func:`time_to_accuracy_figure` as a PNG (Agg), written atomically."""
    import matplotlib.pyplot as plt

    figure = time_to_accuracy_figure(points)
    with atomic_path(output_png) as temporary:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
    plt.close(figure)


def dc_vs_odc_from_spec(spec: dict) -> tuple[list[dict], dict[str, list[tuple[float, float]]]]:
    """Rows and time-to-accuracy points from the workflow's spec (``rules/common.smk: dc_vs_odc_spec``): per model
    {method, model (model.pth), voc07_svm [per-layer JSONs], voc07_lowshot [per-layer JSONs],
    snapshots {name: {model, voc07_svm}}}. Times are the training loop's seconds recorded in each model file."""
    from ..models.backbones import read_model_file  # torch: imported only when the table is made

    rows, points = [], {}
    for name, entry in spec.items():
        saved = read_model_file(entry["model"])
        svm, _ = best_layer([read_json(path) for path in entry["voc07_svm"]], "map")
        lowshot, _ = best_layer([read_json(path) for path in entry["voc07_lowshot"]], "track_score")
        rows.append({"model": name, "method": entry["method"], "backbone": saved["backbone_config"]["name"],
                     "device": saved["device"], "pretrain_seconds": saved["train_seconds"],
                     "epochs": saved["epochs"], "voc07_svm": svm, "voc07_lowshot": lowshot})
        curve = points.setdefault(name, [])
        for snapshot in entry.get("snapshots", {}).values():
            seconds = read_model_file(snapshot["model"])["train_seconds"]
            curve.append((seconds, best_layer([read_json(path) for path in snapshot["voc07_svm"]], "map")[0]))
        curve.append((saved["train_seconds"], svm))
        if entry.get("benchmark"):
            rows[-1]["wall_seconds"] = benchmark_seconds(entry["benchmark"])
    dc_finals = [row["voc07_svm"] for row in rows if row["method"] == "dc"]
    if dc_finals:  # time-to-accuracy: when each curve first reaches DC's final mAP (the best DC model's)
        for row in rows:
            row["seconds_to_dc_final"] = seconds_to_reach(points[row["model"]], max(dc_finals))
    return rows, points


def write_dc_vs_odc(spec: dict, table_outputs: Sequence[str], plot_output: str, log: logging.Logger) -> pd.DataFrame:
    """The whole DC vs ODC stage: table (csv/md) and time-to-accuracy plot from the spec."""
    rows, points = dc_vs_odc_from_spec(spec)
    frame = dc_vs_odc_table(rows)
    write_dc_vs_odc_table(frame, table_outputs)
    plot_time_to_accuracy(points, plot_output)
    log.info("DC vs ODC:\n%s", frame.to_string(index=False))
    return frame
