"""The label file: cluster ids of the pretraining images (CLS's targets, a CODC round's initial labels).

One ``.npz`` with ``labels`` (int64 ``[N]``, in the image source's index order) and ``metadata`` (a JSON string
that always records ``num_samples`` and ``num_clusters``). :func:`save_labels` is its one writer (atomic),
:func:`read_labels_file` its one reader (:func:`load_labels` checks what it reads against the training set).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_path, parse_json_text, read_npz

LABELS_KEY, METADATA_KEY = "labels", "metadata"
LABELS_FILE_WRITER = "save_labels (rule pseudo_labels for CLS, codc_labels for a CODC round)"


def save_labels(path: str | os.PathLike, labels: np.ndarray, metadata: dict[str, Any]) -> None:
    """Write ``labels`` (integers ``[N]``) and the JSON ``metadata`` to ``path`` (``.npz``) atomically. The metadata
    always records ``num_samples`` and ``num_clusters`` (the given one, else max label + 1)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: label files must end in .npz")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative, got {int(labels.min())}")
    num_clusters = int(metadata.get("num_clusters", int(labels.max()) + 1 if labels.size else 0))
    if labels.size and labels.max() >= num_clusters:
        raise ValueError(f"{path}: label {int(labels.max())} out of range for num_clusters {num_clusters}")
    metadata = {**metadata, "num_samples": int(labels.size), "num_clusters": num_clusters}
    with atomic_path(path) as temporary:
        np.savez(temporary, **{LABELS_KEY: labels.astype(np.int64),
                               METADATA_KEY: np.array(json.dumps(metadata, sort_keys=True))})


def read_labels_file(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """``(labels int64[N], metadata)`` of a file written by :func:`save_labels`: the one reader of the format. A
    truncated or damaged file raises :class:`~ssl_challenge.core.io.CorruptFileError` naming it and its writer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pseudo-label file not found")

    def check(names: list[str]) -> None:
        if LABELS_KEY not in names or METADATA_KEY not in names:
            raise ValueError(f"{path}: not a pseudo-label file (expected entries '{LABELS_KEY}' and "
                             f"'{METADATA_KEY}', found {names})")

    arrays = read_npz(path, LABELS_FILE_WRITER, [LABELS_KEY, METADATA_KEY], check)
    labels, metadata = arrays[LABELS_KEY], parse_json_text(path, str(arrays[METADATA_KEY]), LABELS_FILE_WRITER)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):  # float labels could hold NaN
        raise ValueError(f"{path}: labels must be a 1-d integer array, found {labels.dtype} {labels.shape}; delete "
                         "the file and rerun the labelling step")
    return labels.astype(np.int64), metadata


def load_labels(path: str | os.PathLike, num_samples: int, num_clusters: int | None = None) -> np.ndarray:
    """The labels ``int64[num_samples]`` of ``path``; raises naming the file when it holds another number of
    labels (they were computed for another training set) or, if ``num_clusters`` is given, another k."""
    labels, metadata = read_labels_file(path)
    if labels.shape != (num_samples,):
        raise ValueError(f"{path}: {labels.size} labels, expected one per training sample ({num_samples}); "
                         "the labels were computed on another training set")
    if num_clusters is not None:
        if metadata["num_clusters"] != num_clusters or (labels.size and labels.max() >= num_clusters):
            raise ValueError(f"{path}: labels of {metadata['num_clusters']} clusters, expected num_clusters "
                             f"{num_clusters}")
    return labels
