"""Pseudo-labels from already-trained models: what supervises CLS, and each CODC round's initial labels.

The features of one or more models over the pretraining set (in the image source's index order) are
L2-normalised per model and concatenated (``concat.concatenate_blocks``), PCA-whitened and L2-normalised (DC's
preprocessing, ``clustering.pca``), then clustered with k-means (``clustering.kmeans``). The cluster ids are
stored in a small ``.npz`` beside their metadata (models, k, PCA dims, seed), written atomically
(``clustering.labels`` owns the file format).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import torch

from ..clustering.labels import save_labels
from .concat import concatenate_blocks
from ..core.finite import require_finite
from ..models.backbones import load_backbone
from ..core.numerics import numerics_record, start_numerics


def cluster_concatenated(blocks: Sequence[np.ndarray], num_clusters: int, pca_dims: int, seed: int,
                         iterations: int = 20) -> np.ndarray:
    """``[N, D_1], ..., [N, D_m]`` (one block per model) -> cluster ids ``int64[N]`` in ``[0, num_clusters)``.

    Each block is L2-normalised, the blocks concatenated, PCA-whitened to ``min(pca_dims, N, sum D)`` dimensions
    and L2-normalised, then clustered by k-means (``iterations`` rounds, faiss seeded with ``seed``).
    """
    from ..clustering.kmeans import kmeans
    from ..clustering.pca import pca_whiten_normalise

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
    from ..engine.inference import frozen_outputs

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


def make_pseudo_labels(model_paths: Sequence[str], pretrain_data: dict, imagenet_root: str, num_clusters: int,
                       pca_dims: int, seed: int, output: str, threads: int, log: logging.Logger,
                       batch_size: int = 256, metadata: dict | None = None, data_workers: int = 0) -> None:
    """The labelling stage: k-means labels of the pretraining images from the concatenated features of
    ``model_paths`` (CLS's supervision, or a CODC member's initial labels in a round)."""
    from ..data.imagenet import pretraining_images
    from ..core.devices import select_device

    start_numerics(threads)
    images = pretraining_images(imagenet_root, pretrain_data, threads, log.info)
    labels = labels_from_models(model_paths, images, num_clusters, pca_dims, seed, batch_size, select_device(),
                                output, metadata, data_workers)
    sizes = np.bincount(labels, minlength=num_clusters)
    log.info("%d labels from %s: %d non-empty clusters of %d, largest %d", len(labels), list(model_paths),
             int((sizes > 0).sum()), num_clusters, int(sizes.max()))
