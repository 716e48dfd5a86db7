"""Feature concatenation: the challenge entry's final representation is several models' features side by side.

Each member's block is L2-normalised row by row before concatenation, so that every member contributes equally
whatever the scale of its activations (a network whose features are 100 times larger does not drown the others).
The normalisation is the one of the SVM protocol, ``f / (||f|| + 1e-5)`` in float64
(``evaluation.svm_solver.l2_normalise_rows``), stored in float32: the epsilon keeps all-zero rows (dead ReLU
features of a random network) at zero instead of dividing by zero.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from ..evaluation.svm_solver import NORM_EPSILON, l2_normalise_rows
from ..data.feature_files import load_features, save_features

# Metadata copied from the members (and checked to be identical): what the evaluation stages read.
SHARED_METADATA_KEYS = ("split", "image_ids", "labels")


def concatenate_blocks(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, D_1], ..., [N, D_m]`` -> float32 ``[N, D_1 + ... + D_m]``, every block L2-normalised row-wise first
    (each row of the result then has squared norm close to m, one per member)."""
    if not blocks:
        raise ValueError("concatenate_blocks: no blocks given")
    counts = [np.shape(block)[0] for block in blocks]
    if len(set(counts)) > 1:
        raise ValueError(f"concatenate_blocks: the blocks have different numbers of rows {counts}")
    return np.concatenate([l2_normalise_rows(block).astype(np.float32) for block in blocks], axis=1)


def common_layers(paths: Sequence[str], metadatas: Sequence[dict], layers: Sequence[str] | None) -> list[str]:
    """The layers to concatenate: ``layers`` (each must be in every file), or those present in all files (in the
    first file's order)."""
    available = [list(metadata["layers"]) for metadata in metadatas]
    if layers is None:
        chosen = [layer for layer in available[0] if all(layer in others for others in available[1:])]
        if not chosen:
            raise ValueError(f"no layer is present in all of {list(paths)}: they have {available}")
        return chosen
    for path, present in zip(paths, available):
        missing = [layer for layer in layers if layer not in present]
        if missing:
            raise KeyError(f"{path}: no layer(s) {missing} to concatenate; the file has {present}")
    return list(layers)


def check_same_images(paths: Sequence[str], metadatas: Sequence[dict]) -> None:
    """Every member must describe the same images in the same order, with the same labels."""
    reference_path, reference = paths[0], metadatas[0]
    for path, metadata in zip(paths[1:], metadatas[1:]):
        for key in SHARED_METADATA_KEYS:
            if metadata.get(key) != reference.get(key):
                raise ValueError(f"{path}: its '{key}' differs from that of {reference_path}; the members of a "
                                 "concatenation must be features of the same images in the same order")
        if metadata["num_images"] != reference["num_images"]:
            raise ValueError(f"{path}: {metadata['num_images']} images, but {reference_path} has "
                             f"{reference['num_images']}")


def _read_metadata(path: str) -> dict[str, Any]:
    _, metadata = load_features(path, layers=[])
    return metadata


def concatenate_feature_files(paths: Sequence[str], output: str | os.PathLike,
                              layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Concatenate the members' features layer by layer into one feature file (written atomically).

    ``paths``: the members' feature files of one split (``feature_files.save_features`` format). The output has, for
    every chosen layer, ``concatenate_blocks`` of the members' arrays of that layer; its metadata records the
    members, each member's dimension per layer, and copies ``split``/``image_ids``/``labels``. Returns the
    metadata written.
    """
    paths = [str(path) for path in paths]
    if not paths:
        raise ValueError(f"{output}: no member feature files to concatenate")
    metadatas = [_read_metadata(path) for path in paths]
    check_same_images(paths, metadatas)
    chosen = common_layers(paths, metadatas, layers)
    concatenated, member_dims, member_channels = {}, {}, {}
    for layer in chosen:
        blocks = [load_features(path, [layer])[0][layer] for path in paths]
        member_dims[layer] = [int(block.shape[1]) for block in blocks]
        channels = [(metadata.get("pooling_plan") or {}).get(layer, {}).get("channels") for metadata in metadatas]
        if None not in channels:  # each member's map channels: the probe's per-channel BatchNorm needs them
            member_channels[layer] = channels
        concatenated[layer] = concatenate_blocks(blocks)
        del blocks
    metadata = {
        **{key: metadatas[0].get(key) for key in SHARED_METADATA_KEYS},
        "concatenation": {
            "members": paths,
            "member_models": [metadata.get("model") for metadata in metadatas],
            "member_dims": member_dims,
            "member_channels": member_channels,
            "normalisation": f"each member block: f / (||f||_2 + {NORM_EPSILON})",
        },
        "layers": chosen,
    }
    save_features(output, concatenated, metadata)
    return {**metadata, "num_images": int(metadatas[0]["num_images"])}


def concatenate_model_features(paths: Sequence[str], output: str, layers: Sequence[str] | None,
                               log: logging.Logger) -> None:
    """The concatenation stage: ``concatenate_feature_files`` with a log line of what was joined."""
    metadata = concatenate_feature_files(paths, output, layers)
    log.info("concatenated %s: %d images, dims %s", list(paths), metadata["num_images"],
             metadata["concatenation"]["member_dims"])
