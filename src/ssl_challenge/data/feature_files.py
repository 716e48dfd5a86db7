"""The feature file: one ``.npz`` per (model, split) holding one float32 array per layer (``feat1``..``feat5``) and
``metadata``, a JSON string with what is needed to interpret and reproduce it (backbone config, pooling plan,
input size, layers, number of images). Its one writer and one reader. NaN or infinite features are refused when
written and when read, naming the file (and the model, when known).

Torch-free: the tracks that only read features (the SVMs, the concatenations, the cached probe) do not depend on
the extraction code (features.py), so editing that code does not make them stale.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.finite import require_finite
from ..core.io import atomic_path, parse_json_text, read_npz
from ..core.numerics import numerics_record

METADATA_KEY = "metadata"
FEATURE_FILE_WRITER = ("save_features (rules extract_voc07_features and extract_places205_features; "
                       "concat_voc07_features and concat_places205_features for a concatenation)")


def save_features(path: str | os.PathLike, features: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write all layers and the JSON ``metadata`` to one ``.npz`` atomically (a killed job leaves no file)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: feature files must end in .npz")
    if METADATA_KEY in features:
        raise ValueError(f"{path}: '{METADATA_KEY}' is reserved and cannot be a layer name")
    counts = {layer: array.shape[0] for layer, array in features.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{path}: layers have different numbers of images {counts}")
    arrays = {layer: np.ascontiguousarray(array, dtype=np.float32) for layer, array in features.items()}
    source = f" of model file {metadata['model']}" if metadata.get("model") else ""
    for layer, array in arrays.items():
        require_finite(array, f"{path}: features {layer}{source}",
                       "the model is broken (diverged training?); nothing was written")
    # The counts that a reader checks first are always recorded, whatever the caller put in the metadata.
    metadata = {"layers": list(features), "num_images": next(iter(counts.values()), 0),
                "numerics": numerics_record(), **metadata}
    arrays[METADATA_KEY] = np.array(json.dumps(metadata, sort_keys=True))
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def load_features(
    path: str | os.PathLike, layers: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``({layer: float32 [N, dim]}, metadata)``; ``layers=None`` loads every layer in the file. A truncated or
    damaged file raises :class:`~ssl_challenge.core.io.CorruptFileError` naming it and its writer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: feature file not found")

    def check(names: list[str]) -> None:
        if METADATA_KEY not in names:
            raise ValueError(f"{path}: not a feature file (no '{METADATA_KEY}' entry)")
        available = [name for name in names if name != METADATA_KEY]
        missing = [layer for layer in layers or [] if layer not in available]
        if missing:
            raise KeyError(f"{path}: no layer(s) {missing}; the file has {sorted(available)}")

    arrays = read_npz(path, FEATURE_FILE_WRITER, None if layers is None else [METADATA_KEY, *layers], check)
    metadata = parse_json_text(path, str(arrays.pop(METADATA_KEY)), FEATURE_FILE_WRITER)
    for layer, array in arrays.items():
        require_finite(array, f"{path}: features {layer}", "delete the file and extract the features again; if they "
                       "come out non-finite again, the model that produced them is broken")
    return arrays, metadata


def voc07_split_with_features(features_path, layer, voc07_root, subset, classes):
    """Features of ``layer`` and the VOC label matrix, checked to be in the same image order."""
    from .voc07 import read_voc07_labels, voc07_class_names

    classes = list(classes) or voc07_class_names(voc07_root)
    features, metadata = load_features(features_path, [layer])
    ids, labels = read_voc07_labels(voc07_root, subset, classes)
    if list(metadata["image_ids"]) != list(ids):
        raise ValueError(f"{features_path}: image order differs from {voc07_root} ImageSets/Main/{subset}.txt; "
                         "re-extract the features")
    return features[layer], labels, classes
