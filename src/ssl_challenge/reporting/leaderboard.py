"""The leaderboard (one row per model, the best layer of each track), stage times and the low-shot plot, from
the evaluation JSON files the pipeline wrote.

Only measured numbers go in the measured section; the published reference rows (docs/protocols.md) are a separate,
labelled section and never mixed with them.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.io import atomic_path, write_text_atomic
from .table_formats import (SELECTION, best_layer, latex_table, markdown_table, paths_by_suffix, read_json,
                            selection_note)

TRACK_COLUMNS = ["voc07_svm", "voc07_lowshot", "places205_linear"]
PROBE_TRACKS = ("places205_linear", "imagenet_linear")  # one JSON per model, top-1 per layer
OPTIONAL_TRACK_COLUMNS = ["imagenet_linear"]  # a column only when some model has the track (config-enabled)
LAYER_FREE_TRACKS = ["voc07_detection"]  # one figure per model (mAP x100), no layer; a column when some model has it
PUBLISHED_SOURCE = "published: ResNet-50, ImageNet pretraining, OpenSelfSup protocol (not measured here)"
# (model, VOC07 SVM best layer, low-shot mean over k, Places205 feat5 top-1); None where not published.
PUBLISHED_ROWS = [
    ("supervised", 87.17, 75.71, 53.05),
    ("random init", 30.54, 14.84, None),
    ("Relative-Loc", 64.78, 38.70, None),
    ("Rotation", 67.38, 41.04, 43.72),
    ("DeepCluster", 74.26, 54.85, 42.61),
    ("NPID", 74.50, 51.13, 47.73),
    ("ODC", 78.42, 58.38, 49.18),
    ("MoCo v1", 79.18, 57.68, None),
    ("challenge winner (seed slides, concatenation)", 79.82, 57.10, None),
]


def model_row(model: str, files: dict) -> dict:
    """One leaderboard row: best-layer score per track (x100) and the layer it came from."""
    row: dict = {"model": model}
    svm = [read_json(path) for path in files.get("voc07_svm", [])]
    if svm:
        row["voc07_svm"], row["voc07_svm_layer"] = best_layer(svm, "map")
    lowshot = [read_json(path) for path in files.get("voc07_lowshot", [])]
    if lowshot:
        row["voc07_lowshot"], row["voc07_lowshot_layer"] = best_layer(lowshot, "track_score")
    for track in PROBE_TRACKS:
        for path in files.get(track, []):
            top1 = read_json(path)["top1"]
            layer = max(top1, key=top1.get)
            row[track], row[f"{track}_layer"] = float(top1[layer]), layer
    for track in LAYER_FREE_TRACKS:
        for path in files.get(track, []):
            row[track] = float(read_json(path)["map"])
    return row


def measured_table(evaluations: dict) -> pd.DataFrame:
    tracks = TRACK_COLUMNS + [track for track in OPTIONAL_TRACK_COLUMNS
                              if any(track in files for files in evaluations.values())]
    columns = ["model"] + [name for track in tracks for name in (track, f"{track}_layer")]
    columns += [track for track in LAYER_FREE_TRACKS if any(track in files for files in evaluations.values())]
    rows = [model_row(model, files) for model, files in evaluations.items()]
    return pd.DataFrame(rows, columns=columns)


def published_table() -> pd.DataFrame:
    frame = pd.DataFrame(PUBLISHED_ROWS, columns=["model", "voc07_svm", "voc07_lowshot", "places205_linear"])
    frame["source"] = PUBLISHED_SOURCE
    return frame


def lowshot_samples_note(evaluations: dict) -> str:
    """Where the low-shot column's samples came from, from the results' ``seed`` (None: read from the challenge's
    published files, ``evaluation.voc07_lowshot.published_samples``): "" when no low-shot result records it."""
    sources = set()
    for files in evaluations.values():
        for path in files.get("voc07_lowshot", []):
            result = read_json(path)
            if "seed" not in result:
                continue
            seed = result["seed"]
            sources.add("published samples (the challenge's files)" if seed is None
                        else f"drawn (random seed {seed})")
    return f"Low-shot samples (voc07_lowshot): {'; '.join(sorted(sources))}." if sources else ""


def write_tables(measured: pd.DataFrame, published: pd.DataFrame, outputs: Sequence[str],
                 samples_note: str = "") -> None:
    """leaderboard.csv (a `section` column separates measured from published rows), .md and .tex; ``samples_note``
    (:func:`lowshot_samples_note`) goes under the measured table."""
    csv_path, md_path, tex_path = paths_by_suffix(outputs, (".csv", ".md", ".tex"))
    combined = pd.concat([measured.assign(section="measured"), published.assign(section="published")])
    with atomic_path(csv_path) as tmp:
        combined.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
    published_view = published.drop(columns=["source"])
    note = selection_note([track for track in SELECTION if track in measured.columns])
    if samples_note:
        note = f"{note} {samples_note}" if note else samples_note
    write_text_atomic(md_path, "\n".join([
        "# Leaderboard", "", "Measured by this pipeline (best layer per track, x100):", "",
        markdown_table(measured), "", note, "", f"## Published reference figures ({PUBLISHED_SOURCE})", "",
        markdown_table(published_view), "",
    ]))
    write_text_atomic(tex_path, latex_table(measured, "Measured by this pipeline (best layer per track)", note)
                      + latex_table(published_view, PUBLISHED_SOURCE))


def stage_times(benchmark_dir: str | Path) -> pd.DataFrame:
    """Wall time of every job from Snakemake's benchmark files (stage = first folder, job = the rest)."""
    rows = []
    root = Path(benchmark_dir)
    for path in sorted(root.rglob("*.tsv")):
        relative = path.relative_to(root).with_suffix("")
        frame = pd.read_csv(path, sep="\t")
        rows.append({"stage": relative.parts[0], "job": "/".join(relative.parts[1:]) or relative.parts[0],
                     "seconds": float(frame["s"].iloc[-1]), "max_rss_mb": float(frame["max_rss"].iloc[-1])})
    return pd.DataFrame(rows, columns=["stage", "job", "seconds", "max_rss_mb"])


def lowshot_figure(evaluations: dict):
    """The low-shot figure (a matplotlib Figure): per model with low-shot results, its best layer's mean test mAP
    against k with the min-max range over samples; each model its own colour and marker, the legend beside the
    axes. Points of different models at one k are spread a little along k so that their ranges stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot_styles import legend_beside, line_styles

    curves = []
    for model, files in evaluations.items():
        results = [read_json(path) for path in files.get("voc07_lowshot", [])]
        if results:
            curves.append((model, max(results, key=lambda result: result["track_score"])))
    figure, axis = plt.subplots(figsize=(8, 4.5) if len(curves) <= 22 else (11, 4.5))
    for index, ((model, best), (colour, marker)) in enumerate(zip(curves, line_styles(len(curves)))):
        ks = sorted(best["per_k"], key=int)
        entries = [best["per_k"][k] for k in ks]
        spread = 2 ** (0.06 * (index - (len(curves) - 1) / 2) / max(1, len(curves) / 8))  # < 1/4 of an octave
        axis.errorbar([int(k) * spread for k in ks], [entry["mean"] for entry in entries],
                      yerr=[[entry["mean"] - entry["min"] for entry in entries],
                            [entry["max"] - entry["mean"] for entry in entries]],
                      color=colour, marker=marker, markersize=5, linewidth=1.2, capsize=2, elinewidth=0.8,
                      label=f"{model} ({best['layer']})")
    if curves:
        ks = sorted({int(k) for _, best in curves for k in best["per_k"]})
        axis.set_xscale("log", base=2)
        axis.set_xticks(ks, [str(k) for k in ks])
        axis.minorticks_off()
    else:
        axis.text(0.5, 0.5, "no low-shot results", ha="center", va="center", transform=axis.transAxes)
        axis.set_xticks([])
        axis.set_yticks([])
    axis.set_xlabel("positives per class (k)")
    axis.set_ylabel("VOC07 test mAP (%), mean over samples")
    axis.set_title(f"VOC07 low-shot SVM, measured: the {len(curves)} models of this run, each at its best layer "
                   "(in the legend)", fontsize=10)
    axis.grid(alpha=0.3)
    legend_beside(axis, "model (layer); bars: min-max over samples")
    return figure


def plot_lowshot(evaluations: dict, output: str | Path) -> None:
    """:func:`lowshot_figure` as a PNG, written atomically."""
    import matplotlib.pyplot as plt

    figure = lowshot_figure(evaluations)
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)


def write_leaderboard(evaluations: dict, benchmark_dir: str, table_outputs: Sequence[str], stage_times_output: str,
                      lowshot_plot: str, log: logging.Logger) -> pd.DataFrame:
    measured = measured_table(evaluations)
    write_tables(measured, published_table(), table_outputs, lowshot_samples_note(evaluations))
    times = stage_times(benchmark_dir)
    with atomic_path(stage_times_output) as tmp:
        times.to_csv(tmp, index=False)
    plot_lowshot(evaluations, lowshot_plot)
    log.info("leaderboard:\n%s", measured.to_string(index=False))
    log.info("stage wall times (s):\n%s", times.groupby("stage")["seconds"].sum().to_string())
    return measured
