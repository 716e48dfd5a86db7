"""What every table shares: reading result files, the best layer, and Markdown / LaTeX rendering."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.io import read_json_object


# What writes the JSON files the tables read; a damaged one is named with it.
RESULT_FILE_WRITER = ("the workflow rule of its track (svm_full, svm_lowshot, merge_lowshot, linear_probe, "
                      "imagenet_linear or voc07_detection; pretrain for a run folder's identity.json)")


def read_json(path: str | Path, writer: str = RESULT_FILE_WRITER) -> dict:
    """The JSON object of a result file (the reader of every file the tables and the submission read); a truncated
    or damaged file raises :class:`~ssl_challenge.core.io.CorruptFileError` naming it and ``writer``."""
    return read_json_object(path, f"{path}: result file not found; it is written by {writer}", "(a result file)",
                            writer)


def best_layer(results: Sequence[dict], score_key: str) -> tuple[float, str]:
    """The best layer's score among per-layer result dicts (each with 'layer')."""
    best = max(results, key=lambda result: result[score_key])
    return float(best[score_key]), best["layer"]


def format_number(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.2f}"


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = [format_number(value) if isinstance(value, float) or value is None else str(value) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    return str(text).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def latex_table(frame: pd.DataFrame, caption: str, note: str = "") -> str:
    """A booktabs table; ``note`` (e.g. :func:`selection_note`) is a small-print line under the tabular."""
    columns = " & ".join(latex_escape(column) for column in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = [format_number(v) if isinstance(v, float) or v is None else latex_escape(v) for v in row]
        body.append(" & ".join(cells) + r" \\")
    under = [r"\par\smallskip", r"{\footnotesize " + latex_escape(note) + "}"] if note else []
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
        r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule", columns + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", *under, r"\end{table}", "",
    ])


# What each track's figure in a table was selected on. The reference protocol selects on test data (the tables say
# so under each one): the figures are optimistic as estimates of accuracy on unseen data.
SELECTION = {
    "voc07_svm": "VOC07 SVM: each model's layer with the best test mAP (the cost of each class is chosen by "
                 "cross-validation on trainval)",
    "voc07_lowshot": "VOC07 low-shot: for each k the cost with the best test mAP averaged over the samples, then the "
                     "layer with the best track score (test)",
    "places205_linear": "Places205: the layer with the best top-1 on val, which is Places205's test split",
    "imagenet_linear": "ImageNet linear: the layer with the best top-1 on val (ImageNet's test split here)",
}


def selection_note(tracks: Sequence[str]) -> str:
    """One line saying which choices behind the figures of ``tracks`` (keys of :data:`SELECTION`, in that order)
    were made on test data; empty without tracks."""
    unknown = [track for track in tracks if track not in SELECTION]
    if unknown:
        raise ValueError(f"selection_note: no selection recorded for {unknown}; known: {list(SELECTION)}")
    if not tracks:
        return ""
    return ("Selected on test data, as in the reference protocol. " + "; ".join(SELECTION[track] for track in tracks)
            + ".")


def paths_by_suffix(outputs: Sequence[str], suffixes: Sequence[str]) -> list[str]:
    """The one path of ``outputs`` ending in each of ``suffixes``, in that order (a rule lists a table's files)."""
    paths = []
    for suffix in suffixes:
        matching = [str(path) for path in outputs if str(path).endswith(suffix)]
        if len(matching) != 1:
            raise ValueError(f"outputs {list(outputs)}: expected exactly one {suffix} file")
        paths.append(matching[0])
    return paths

