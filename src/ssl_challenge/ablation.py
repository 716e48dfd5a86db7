"""The CODC ablation table (the seed's Table 2 form), the DC vs ODC table and the time-to-accuracy plot.

CODC ablation: one row per stage (before CODC, after CODC, concatenation, and the ``label_source: self`` control),
one column per experiment and member (``2 models: DC``), VOC07 SVM mAP of the best layer. A concatenation has one
value per experiment: it is placed in the experiment's first member column (the others stay empty), as the seed's
table spans it over the members. The seed's published figures are a separate, labelled section, never mixed with
the measured ones.
"""
from __future__ import annotations

import csv
import logging
from typing import Sequence

import pandas as pd

from .io import atomic_path, write_text_atomic
from .tables import best_layer, latex_table, markdown_table, read_json

STAGE_ROWS = {
    "before": "before CODC",
    "after": "after CODC",
    "concatenate": "concatenate",
    "control_after": "control (label_source: self): after CODC",
    "control_concatenate": "control (label_source: self): concatenate",
}
CONCATENATION_STAGES = ("concatenate", "control_concatenate")
PUBLISHED_ABLATION_SOURCE = ("the seed slides' CODC ablation: challenge winner, ResNet-50, ImageNet pretraining, "
                             "VOC07 SVM mAP; not measured here")
# (experiment, member, stage, VOC07 SVM mAP) as in PROTOCOLS.md; the 3-model DC/ROT "before" are not published.
PUBLISHED_ABLATION = [
    ("2 models", "DC", "before", 69.12), ("2 models", "ROT", "before", 67.35),
    ("2 models", "DC", "after", 75.79), ("2 models", "ROT", "after", 74.54),
    ("2 models", "", "concatenate", 76.33),
    ("3 models", "DC", "before", None), ("3 models", "ROT", "before", None), ("3 models", "CLS", "before", 77.7),
    ("3 models", "DC", "after", 76.48), ("3 models", "ROT", "after", 72.94), ("3 models", "CLS", "after", 78.05),
    ("3 models", "", "concatenate", 79.82),
]
DC_VS_ODC_COLUMNS = ["model", "method", "backbone", "device", "pretrain_seconds", "epochs", "voc07_svm",
                     "voc07_lowshot"]
DC_VS_ODC_OPTIONAL = ["wall_seconds", "seconds_to_dc_final"]


# ------------------------------------------------------------------------------------------------ CODC ablation
def codc_ablation_table(entries: Sequence[dict]) -> pd.DataFrame:
    """``entries``: dicts {experiment, member, stage, voc07_svm} (stage one of ``STAGE_ROWS``; ``member`` is ignored
    for the concatenation stages) -> a frame with a ``stage`` column and one column per ``experiment: member`` in
    order of appearance. Rows appear in ``STAGE_ROWS`` order, only for stages some entry has."""
    columns: dict[str, list[str]] = {}  # experiment -> its members, in order of appearance
    for entry in entries:
        missing = {"experiment", "member", "stage", "voc07_svm"} - set(entry)
        if missing:
            raise ValueError(f"CODC ablation entry {entry}: missing key(s) {sorted(missing)}")
        if entry["stage"] not in STAGE_ROWS:
            raise ValueError(f"CODC ablation entry {entry}: unknown stage {entry['stage']!r}; "
                             f"expected one of {list(STAGE_ROWS)}")
        members = columns.setdefault(entry["experiment"], [])
        if entry["stage"] not in CONCATENATION_STAGES and entry["member"] not in members:
            members.append(entry["member"])
    for experiment, members in columns.items():
        if not members:
            raise ValueError(f"CODC ablation: experiment {experiment!r} has a concatenation but no member entries")
    names = [f"{experiment}: {member}" for experiment, members in columns.items() for member in members]
    cells: dict[tuple[str, str], float] = {}
    for entry in entries:
        stage, experiment = entry["stage"], entry["experiment"]
        column = f"{experiment}: {columns[experiment][0] if stage in CONCATENATION_STAGES else entry['member']}"
        if (stage, column) in cells:
            raise ValueError(f"CODC ablation: two values for stage {stage!r} of {column!r}")
        cells[(stage, column)] = None if entry["voc07_svm"] is None else float(entry["voc07_svm"])
    stages = [stage for stage in STAGE_ROWS if any(key[0] == stage for key in cells)]
    rows = [{"stage": STAGE_ROWS[stage], **{name: cells.get((stage, name)) for name in names}} for stage in stages]
    frame = pd.DataFrame(rows, columns=["stage", *names])
    frame[names] = frame[names].astype(float)
    return frame


def published_codc_ablation() -> pd.DataFrame:
    """The seed's published ablation in the same form (for the separate, labelled section)."""
    entries = [{"experiment": e, "member": m, "stage": s, "voc07_svm": v} for e, m, s, v in PUBLISHED_ABLATION]
    return codc_ablation_table(entries)


def write_codc_ablation(frame: pd.DataFrame, outputs: Sequence[str]) -> None:
    """``.csv`` (a ``section`` column: measured / published), ``.md`` and ``.tex`` (measured table, then the
    published one under its own heading); each written atomically. ``outputs`` holds one path per suffix."""
    csv_path, md_path, tex_path = _paths_by_suffix(outputs, (".csv", ".md", ".tex"))
    published = published_codc_ablation()
    combined = pd.concat([frame.assign(section="measured"), published.assign(section="published")])
    with atomic_path(csv_path) as temporary:
        combined.to_csv(temporary, index=False, quoting=csv.QUOTE_MINIMAL)
    write_text_atomic(md_path, "\n".join([
        "# CODC ablation", "",
        "Measured by this pipeline: VOC07 SVM mAP (best layer, x100). A concatenation's value is in its "
        "experiment's first column.", "",
        markdown_table(frame), "", f"## Published reference figures ({PUBLISHED_ABLATION_SOURCE})", "",
        markdown_table(published), "",
    ]))
    write_text_atomic(tex_path, latex_table(frame, "CODC ablation, measured by this pipeline (VOC07 SVM mAP, "
                                                   "best layer)")
                      + latex_table(published, f"Published reference figures ({PUBLISHED_ABLATION_SOURCE})"))


def _paths_by_suffix(outputs: Sequence[str], suffixes: Sequence[str]) -> list[str]:
    paths = []
    for suffix in suffixes:
        matching = [str(path) for path in outputs if str(path).endswith(suffix)]
        if len(matching) != 1:
            raise ValueError(f"outputs {list(outputs)}: expected exactly one {suffix} file")
        paths.append(matching[0])
    return paths


# ------------------------------------------------------------------------------------------------ DC vs ODC
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
    csv_path, md_path = _paths_by_suffix(outputs, (".csv", ".md"))
    with atomic_path(csv_path) as temporary:
        frame.to_csv(temporary, index=False)
    write_text_atomic(md_path, "\n".join([
        "# DC vs ODC", "", "Measured by this pipeline: pretraining time (training loop, seconds), epochs, VOC07 "
        "SVM mAP (best layer) and low-shot track score (best layer), x100; `wall_seconds`: the whole job (benchmark "
        "file); `seconds_to_dc_final`: training seconds until the VOC07 SVM mAP first reaches DC's final one, "
        "interpolated between evaluated snapshots (empty: never).", "", markdown_table(frame), ""]))
    tex = [str(path) for path in outputs if str(path).endswith(".tex")]
    if tex:
        write_text_atomic(tex[0], latex_table(frame, "DC vs ODC, measured by this pipeline"))


def plot_time_to_accuracy(points: dict[str, Sequence[tuple[float, float]]], output_png: str) -> None:
    """VOC07 SVM mAP against pretraining seconds, one line per method (points sorted by time), PNG (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for method, method_points in points.items():
        ordered = sorted((float(seconds), float(score)) for seconds, score in method_points)
        if ordered:
            axis.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="o", label=method)
    axis.set_xlabel("pretraining time (s)")
    axis.set_ylabel("VOC07 SVM mAP (%), best layer")
    axis.set_title("Time to accuracy (measured)")
    axis.grid(alpha=0.3)
    if points:
        axis.legend()
    figure.tight_layout()
    with atomic_path(output_png) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)


def dc_vs_odc_from_spec(spec: dict) -> tuple[list[dict], dict[str, list[tuple[float, float]]]]:
    """Rows and time-to-accuracy points from the workflow's spec (``rules/common.smk: dc_vs_odc_spec``): per model
    {method, model (model.pth), voc07_svm [per-layer JSONs], voc07_lowshot [per-layer JSONs],
    snapshots {name: {model, voc07_svm}}}. Times are the training loop's seconds recorded in each model file."""
    from .models.backbones import read_model_file  # torch: imported only when the table is made

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


def write_codc_ablation_from_results(entries: Sequence[Sequence], outputs: Sequence[str],
                                     log: logging.Logger) -> pd.DataFrame:
    """``entries``: ``[experiment, member, stage, [per-layer VOC07 SVM result files]]`` as the workflow lists
    them -> the ablation table of each cell's best layer, written to ``outputs`` (.csv, .md, .tex)."""
    cells = []
    for experiment, member, stage, files in entries:
        score, layer = best_layer([read_json(path) for path in files], "map")
        cells.append({"experiment": experiment, "member": member, "stage": stage, "voc07_svm": score})
        log.info("%s %s %s: %.2f (%s)", experiment, member, stage, score, layer)
    frame = codc_ablation_table(cells)
    write_codc_ablation(frame, outputs)
    return frame
