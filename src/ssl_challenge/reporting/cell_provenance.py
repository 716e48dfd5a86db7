"""Per-cell provenance of the leaderboard and the CODC ablation: a sidecar JSON beside each table.

Every measured figure of a table is traced to the result file it was read from (path and SHA-256 of its bytes) and
to the digests behind it:

- training: the run folder that wrote the model file (``models/<model>/runs/<digest>/``, found by the content of
  the model file), whose ``identity.json`` (``pretraining.run_identity``) gives the training config digest (the
  model's config and the pretraining data config), the code digest (the training code's import closure) and the
  data digest (the image list and the data set's files). A concatenation has one training per member; a snapshot
  (``dc@e4``) is found among its model's snapshots.
- evaluation: the digest of the config sections the track reads (``evaluation.<track>``, ``features``, ``data``)
  and of the code of the track's script (its import closure, as ``provenance.code_digest`` computes the rules'
  code params; Snakemake reruns a result whose code digest changed, so the current code is the code behind it).

Torch-free: it reads JSON and hashes bytes.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core import provenance, run_files
from ..core.io import write_json_atomic
from .table_formats import best_layer, read_json

# The script of the rule that writes each track's result files (rules/evaluate.smk).
TRACK_SCRIPTS = {
    "voc07_svm": "svm_full.py",
    "voc07_lowshot": "svm_lowshot.py",
    "places205_linear": "linear_probe.py",
    "imagenet_linear": "imagenet_linear.py",
    "voc07_detection": "detection.py",  # rules/detection.smk
}
SCORE_KEYS = {"voc07_svm": "map", "voc07_lowshot": "track_score"}
SCRIPTS_DIR = Path(__file__).resolve().parents[3] / "workflow" / "scripts"


def file_sha256(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes (each version of a file hashed once: model files are large and
    every cell of a model asks for the same ones)."""
    status = Path(path).stat()
    return _sha256(str(path), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, _mtime_ns: int, _size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def json_digest(value) -> str:
    """SHA-256 (12 hex digits) of ``value`` as sorted JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def training_run(model_dir: str | Path) -> dict | None:
    """The run folder under ``model_dir/runs`` (or, for a snapshot ``<model>@e<N>``, under its model's) whose model
    file or snapshot has the bytes of ``model_dir/model.pth``, and the digests of its ``identity.json``; None when
    no run folder holds it (a model file written elsewhere)."""
    model_dir = Path(model_dir)
    model_path = model_dir / "model.pth"
    if not model_path.is_file():
        return None
    wanted = file_sha256(model_path)
    owners = [model_dir]
    if "@e" in model_dir.name:
        owners.append(model_dir.with_name(model_dir.name.rsplit("@e", 1)[0]))
    for owner in owners:
        for identity_path in sorted(owner.glob(f"runs/*/{run_files.IDENTITY}")):
            run_dir = identity_path.parent
            candidates = [run_dir / run_files.MODEL,
                          *sorted(run_dir.glob(f"{run_files.SNAPSHOTS}/{run_files.SNAPSHOT_PATTERN}"))]
            if any(path.is_file() and file_sha256(path) == wanted for path in candidates):
                identity = read_json(identity_path)
                return {
                    "run": str(run_dir),
                    "config_digest": json_digest({"model": identity.get("model"),
                                                  "pretrain_data": identity.get("pretrain_data")}),
                    "code_digest": identity.get("code"),
                    "data_digest": json_digest({"images": identity.get("images"),
                                                "data_files": identity.get("data_files"),
                                                "input_files": identity.get("input_files")}),
                }
    return None


def trainings(model: str, concatenations: dict, results_dir: str | Path) -> dict:
    """``{trained model: training_run(...)}`` behind ``model``: itself, or each member of a concatenation."""
    members = concatenations.get(model, [model])
    return {member: training_run(Path(results_dir) / "models" / member) for member in members}


def evaluation_digests(track: str, config: dict) -> dict:
    """Config and code digests of a track's evaluation (see the module's docstring)."""
    sections = {"evaluation": config.get("evaluation", {}).get(track), "features": config.get("features"),
                "data": config.get("data")}
    script = SCRIPTS_DIR / TRACK_SCRIPTS[track]
    return {"config_digest": json_digest(sections),
            "code_digest": provenance.code_digest([script]) if script.is_file() else None}


def cell(table: str, row: str, column: str, value: float, layer: str | None, result_file: str, model: str,
         track: str, config: dict, concatenations: dict, results_dir: str | Path) -> dict:
    """One traced figure."""
    return {
        "table": table, "row": row, "column": column, "value": value, "layer": layer, "model": model,
        "track": track, "result_file": str(result_file), "result_sha256": file_sha256(result_file),
        "evaluation": evaluation_digests(track, config),
        "training": trainings(model, concatenations, results_dir),
    }


def result_file_of_layer(files: Sequence[str], layer: str) -> str:
    """The per-layer result file of ``layer`` among ``files`` (each JSON with 'layer')."""
    for path in files:
        if read_json(path).get("layer") == layer:
            return str(path)
    raise ValueError(f"no result file for layer {layer!r} among {list(files)}")


def leaderboard_cells(table_csv: str | Path, evaluations: dict, concatenations: dict, config: dict,
                      results_dir: str | Path = "results") -> list[dict]:
    """The measured cells of the leaderboard CSV (``tables.write_leaderboard``), each traced to the result file
    of its best layer (``evaluations``: model -> track -> result files, the rule's param)."""
    frame = pd.read_csv(table_csv)
    measured = frame[frame["section"] == "measured"] if "section" in frame else frame
    cells = []
    for _, row in measured.iterrows():
        model = row["model"]
        for track, files in evaluations.get(model, {}).items():
            if track not in row or pd.isna(row[track]):
                continue
            layer = row.get(f"{track}_layer")
            source = result_file_of_layer(files, layer) if track in SCORE_KEYS else files[0]
            cells.append(cell("leaderboard", model, track, float(row[track]), layer, source, model, track,
                              config, concatenations, results_dir))
    return cells


def ablation_cells(entries: Sequence[Sequence], concatenations: dict, config: dict,
                   results_dir: str | Path = "results") -> list[dict]:
    """The cells of the CODC ablation (``entries``: ``[experiment, member, stage, [VOC07 SVM result files]]``, the
    rule's param), each traced to its best layer's result file (a concatenation's column is its experiment's first
    member's, as in the table). The model is the folder of the result files
    (``results/eval/<model>/voc07_svm/<layer>.json``)."""
    from .codc_ablation import STAGE_ROWS

    cells = []
    for experiment, member, stage, files in entries:
        results = [read_json(path) for path in files]
        score, layer = best_layer(results, "map")
        source = str(files[[result["layer"] for result in results].index(layer)])
        model = Path(source).parents[1].name
        cells.append(cell("codc_ablation", STAGE_ROWS[stage], f"{experiment}: {member}", score, layer, source, model, "voc07_svm",
                          config, concatenations, results_dir))
    return cells


def write_sidecar(path: str | Path, table: str, cells: list[dict]) -> None:
    """``<table>.provenance.json`` beside the table, written atomically."""
    write_json_atomic(path, {"table": table, "cells": cells,
                             "about": "each measured figure: its result file and the digests behind it "
                                      "(ssl_challenge/reporting/cell_provenance.py)"})


def provenance_frame(cells: list[dict]) -> pd.DataFrame:
    """A flat view of a sidecar's cells (one row per figure and trained model), for the report."""
    rows = []
    for entry in cells:
        for trained, run in (entry["training"] or {"": None}).items():
            run = run or {}
            rows.append({
                "row": entry["row"], "column": entry["column"], "value": entry["value"], "layer": entry["layer"],
                "result file": entry["result_file"], "result sha256": entry["result_sha256"],
                "evaluation config": entry["evaluation"]["config_digest"],
                "evaluation code": entry["evaluation"]["code_digest"],
                "trained model": trained, "training config": run.get("config_digest"),
                "training code": run.get("code_digest"), "training data": run.get("data_digest"),
                "run folder": run.get("run"),
            })
    return pd.DataFrame(rows)
