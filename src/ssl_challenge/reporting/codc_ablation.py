"""The CODC ablation table (the seed's Table 2 form).

One row per stage (before CODC, after CODC, concatenation, and the ``label_source: self`` control), one column per
experiment and member (``2 models: DC``), VOC07 SVM mAP of the best layer. A concatenation has one value per
experiment: it is placed in the experiment's first member column (the others stay empty), as the seed's table
spans it over the members. The seed's published figures are a separate, labelled section, never mixed with the
measured ones.
"""
from __future__ import annotations

import csv
import logging
from typing import Sequence

import pandas as pd

from ..core.io import atomic_path, write_text_atomic
from .table_formats import best_layer, latex_table, markdown_table, paths_by_suffix, read_json, selection_note

STAGE_ROWS = {
    "before": "before CODC",
    "after": "after CODC",
    "concatenate": "concatenate",
    "control_after": "control (label_source: self): after CODC",
    "control_concatenate": "control (label_source: self): concatenate",
}
CONCATENATION_STAGES = ("concatenate", "control_concatenate")
SELECTION_NOTE = selection_note(["voc07_svm"])  # every cell is a best layer chosen on test data
PUBLISHED_ABLATION_SOURCE = ("the seed slides' CODC ablation: challenge winner, ResNet-50, ImageNet pretraining, "
                             "VOC07 SVM mAP; not measured here")
# (experiment, member, stage, VOC07 SVM mAP) as in docs/protocols.md; the 3-model DC/ROT "before" are not published.
PUBLISHED_ABLATION = [
    ("2 models", "DC", "before", 69.12), ("2 models", "ROT", "before", 67.35),
    ("2 models", "DC", "after", 75.79), ("2 models", "ROT", "after", 74.54),
    ("2 models", "", "concatenate", 76.33),
    ("3 models", "DC", "before", None), ("3 models", "ROT", "before", None), ("3 models", "CLS", "before", 77.7),
    ("3 models", "DC", "after", 76.48), ("3 models", "ROT", "after", 72.94), ("3 models", "CLS", "after", 78.05),
    ("3 models", "", "concatenate", 79.82),
]

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
    csv_path, md_path, tex_path = paths_by_suffix(outputs, (".csv", ".md", ".tex"))
    published = published_codc_ablation()
    combined = pd.concat([frame.assign(section="measured"), published.assign(section="published")])
    with atomic_path(csv_path) as temporary:
        combined.to_csv(temporary, index=False, quoting=csv.QUOTE_MINIMAL)
    write_text_atomic(md_path, "\n".join([
        "# CODC ablation", "",
        "Measured by this pipeline: VOC07 SVM mAP (best layer, x100). A concatenation's value is in its "
        "experiment's first column.", "",
        markdown_table(frame), "", SELECTION_NOTE, "",
        f"## Published reference figures ({PUBLISHED_ABLATION_SOURCE})", "", markdown_table(published), "",
    ]))
    write_text_atomic(tex_path, latex_table(frame, "CODC ablation, measured by this pipeline (VOC07 SVM mAP, "
                                                   "best layer)", SELECTION_NOTE)
                      + latex_table(published, f"Published reference figures ({PUBLISHED_ABLATION_SOURCE})"))


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
