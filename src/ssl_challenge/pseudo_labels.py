"""Pseudo-labels from already-trained models: what supervises CLS, and each CODC round's initial labels.

The features of one or more models over the pretraining set (in the image source's index order) are
L2-normalised per model and concatenated (``concat.concatenate_blocks``), PCA-whitened and L2-normalised (DC's
preprocessing, ``clustering.pca``), then clustered with k-means (``clustering.kmeans``). The cluster ids are
stored in a small ``.npz`` beside their metadata (models, k, PCA dims, seed), written atomically.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .concat import concatenate_blocks
from .finite import require_finite
from .io import atomic_path
from .models.backbones import load_backbone
from .numerics import configure_torch, numerics_record

LABELS_KEY, METADATA_KEY = "labels", "metadata"


def cluster_concatenated(blocks: Sequence[np.ndarray], num_clusters: int, pca_dims: int, seed: int,
                         iterations: int = 20) -> np.ndarray:
    """``[N, D_1], ..., [N, D_m]`` (one block per model) -> cluster ids ``int64[N]`` in ``[0, num_clusters)``.

    Each block is L2-normalised, the blocks concatenated, PCA-whitened to ``min(pca_dims, N, sum D)`` dimensions
    and L2-normalised, then clustered by k-means (``iterations`` rounds, faiss seeded with ``seed``).
    """
    from .clustering.kmeans import kmeans
    from .clustering.pca import pca_whiten_normalise

    if num_clusters < 1 or pca_dims < 1:
        raise ValueError(f"cluster_concatenated: num_clusters ({num_clusters}) and pca_dims ({pca_dims}) "
                         "must be positive")
    features = torch.from_numpy(concatenate_blocks(blocks))
    reduced = pca_whiten_normalise(features, pca_dims)
    result = kmeans(reduced, num_clusters, iterations=iterations, seed=seed)
    return result.assignments.cpu().numpy().astype(np.int64)


def pooled_features(backbone: torch.nn.Module, images, batch_size: int, device: torch.device,
                    workers: int = 0) -> np.ndarray:
    """The global-pooled last-stage features ``float32[N, out_dim]`` of every image of ``images`` (an image
    source: ``len`` and ``load_batch(indices, augment=False, generator)``), un-augmented, in index order, with
    the backbone in eval mode (``engine.inference.run_frozen``). These are what the labelling step clusters."""
    from .engine.inference import frozen_outputs

    return frozen_outputs(backbone, backbone.pooled, images, batch_size, device, workers=workers).numpy()


def labels_from_models(model_paths: Sequence[str], images, num_clusters: int, pca_dims: int, seed: int,
                       batch_size: int, device: torch.device, output: str | os.PathLike,
                       metadata: dict[str, Any] | None = None, workers: int = 0) -> np.ndarray:
    """The labelling step of the workflow: pooled features of every model over ``images`` (the pretraining
    set's image source, un-augmented), ``cluster_concatenated``, saved to ``output`` with the models, k, PCA
    dims, seed and the caller's ``metadata``. Returns the labels."""
    blocks = []
    for path in model_paths:
        blocks.append(pooled_features(load_backbone(path, device)[0], images, batch_size, device, workers))
        require_finite(blocks[-1], f"pseudo-labels: the features of model file {path} over the pretraining set",
                       "the model is broken (diverged training?); retrain it")
    labels = cluster_concatenated(blocks, num_clusters, pca_dims, seed)
    save_labels(output, labels, {**(metadata or {}), "model_files": [str(path) for path in model_paths],
                                 "num_clusters": num_clusters, "pca_dims": pca_dims, "seed": seed,
                                 "feature_dims": [int(block.shape[1]) for block in blocks],
                                 "numerics": numerics_record()})
    return labels


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
    """``(labels int64[N], metadata)`` of a file written by :func:`save_labels`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pseudo-label file not found")
    with np.load(path, allow_pickle=False) as archive:
        if LABELS_KEY not in archive.files or METADATA_KEY not in archive.files:
            raise ValueError(f"{path}: not a pseudo-label file (expected entries '{LABELS_KEY}' and "
                             f"'{METADATA_KEY}', found {archive.files})")
        labels, metadata = archive[LABELS_KEY], json.loads(str(archive[METADATA_KEY]))
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


def make_pseudo_labels(model_paths: Sequence[str], pretrain_data: dict, imagenet_root: str, num_clusters: int,
                       pca_dims: int, seed: int, output: str, threads: int, log: logging.Logger,
                       batch_size: int = 256, metadata: dict | None = None, data_workers: int = 0) -> None:
    """The labelling stage: k-means labels of the pretraining images from the concatenated features of
    ``model_paths`` (CLS's supervision, or a CODC member's initial labels in a round)."""
    from .data.imagenet import pretraining_images
    from .devices import select_device

    configure_torch(threads)
    images = pretraining_images(imagenet_root, pretrain_data, threads, log.info)
    labels = labels_from_models(model_paths, images, num_clusters, pca_dims, seed, batch_size, select_device(),
                                output, metadata, data_workers)
    sizes = np.bincount(labels, minlength=num_clusters)
    log.info("%d labels from %s: %d non-empty clusters of %d, largest %d", len(labels), list(model_paths),
             int((sizes > 0).sum()), num_clusters, int(sizes.max()))
