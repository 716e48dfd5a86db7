"""Extract pooled multi-layer features of a frozen backbone (the feature-extraction stage); the files they are
stored in (one ``.npz`` per model and split) are feature_files.py's.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD, ImageSource, normalise
from ..data.feature_files import load_features, save_features, voc07_split_with_features  # noqa: F401 (one owner)
from ..models.pooling import pool_features
from ..core.numerics import start_numerics

# The normalisation of torchvision's ImageNet models (the reference evaluation pipelines), as (mean, std).
IMAGENET_MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)


def normalise_uint8(images: torch.Tensor, mean_std=IMAGENET_MEAN_STD) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` in 0..255 -> float32 ``(x / 255 - mean) / std`` on the same device."""
    return normalise(images, mean_std[0], mean_std[1])


class TensorImages:
    """A uint8 ``Tensor[N, 3, H, W]`` as an image source: batches normalised with ``mean_std``, never augmented."""

    def __init__(self, images: torch.Tensor, mean_std=IMAGENET_MEAN_STD):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            found = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                     else type(images).__name__)
            raise TypeError(f"images: expected a uint8 Tensor[N, 3, H, W], got {found}")
        self.images, self.mean_std = images, mean_std

    def __len__(self) -> int:
        return self.images.shape[0]

    def load_batch(self, indices: torch.Tensor, augment: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        return normalise_uint8(self.images[indices], self.mean_std)


def as_image_source(images: torch.Tensor | ImageSource, mean_std=IMAGENET_MEAN_STD) -> ImageSource:
    """A uint8 tensor wrapped in :class:`TensorImages`; an image source as it is."""
    if isinstance(images, torch.Tensor):
        return TensorImages(images, mean_std)
    if not hasattr(images, "load_batch"):
        raise TypeError(f"images: expected a uint8 Tensor or an object with load_batch(), got {type(images).__name__}")
    return images


def extract_features(
    backbone: nn.Module,
    images: torch.Tensor | ImageSource,
    layers: Sequence[str],
    plan: dict[str, dict],
    batch_size: int,
    device: torch.device | str,
    normalise_mean_std=IMAGENET_MEAN_STD,
    workers: int = 0,
) -> dict[str, np.ndarray]:
    """Pooled features ``{layer: float32 [N, plan[layer]["dim"]]}`` of every image, in index order.

    The backbone runs in eval mode without gradients (its train/eval flag is restored afterwards;
    ``engine.inference.run_frozen``, with ``workers`` loader processes). ``images`` is a uint8
    ``Tensor[N, 3, H, W]`` (normalised here with ``normalise_mean_std``, batch by batch, so only one batch is
    ever in float) or an :class:`ImageSource` that returns normalised batches itself.
    """
    from ..engine.inference import run_frozen

    layers = list(layers)
    missing = [layer for layer in layers if layer not in plan]
    if missing:
        raise KeyError(f"pooling plan has no layer(s) {missing}; it has {sorted(plan)}")
    source = as_image_source(images, normalise_mean_std)
    num_images = len(source)
    features = {layer: np.empty((num_images, plan[layer]["dim"]), dtype=np.float32) for layer in layers}

    def write(start: int, pooled: dict[str, torch.Tensor]) -> None:
        for layer in layers:
            features[layer][start:start + len(pooled[layer])] = pooled[layer].numpy()

    run_frozen(backbone, lambda batch: pool_features(backbone(batch), plan, layers), source, batch_size, device,
               write, workers=workers)
    return features


# ------------------------------------------------------------------------------------------------ the workflow stage
def pooling_target(features_config: dict) -> int | str:
    pooling = features_config["pooling"]
    return pooling if pooling == "reference" else int(pooling)


def extract_split_features(
    model_path: str,
    outputs: dict[str, str],
    features_config: dict,
    roots: dict,
    classes: Sequence[str],
    threads: int,
    log: logging.Logger,
    data_workers: int = 0,
) -> None:
    """The feature-extraction stage: one model's pooled features of evaluation splits (``outputs``: split -> file,
    e.g. VOC07 trainval and test), each saved with metadata; the backbone is loaded once for all of them. With 0
    ``data_workers`` a split is decoded once into memory (threads) and then run through the model; with more,
    ``data_workers`` processes decode it batch by batch (``data.images.FeatureImages``): the same pixels, the same
    features, without holding the split in memory."""
    from ..data.decoding import load_image_tensor
    from ..data.images import FeatureImages
    from ..data.splits import split_images
    from ..core.devices import select_device
    from ..models.backbones import load_backbone
    from ..models.pooling import pooling_plan

    start_numerics(threads)
    device = select_device()
    backbone, backbone_config = load_backbone(model_path, device)
    plan = pooling_plan(backbone, features_config["image_size"], pooling_target(features_config))
    layers = list(features_config["layers"])
    for split, output in outputs.items():
        paths, ids, labels = split_images(split, roots, classes)
        if data_workers:
            images = FeatureImages(paths, resize_shorter=features_config["resize_shorter"],
                                   final_size=features_config["image_size"], dataset=split)
        else:
            images = load_image_tensor(paths, resize_shorter=features_config["resize_shorter"],
                                       final_size=features_config["image_size"], threads=threads, dataset=split)
        features = extract_features(backbone, images, layers, plan, features_config["batch_size"], device,
                                    workers=data_workers)
        metadata = {
            "split": split,
            "image_ids": ids,
            "labels": None if labels is None else [int(label) for label in labels],
            "backbone_config": backbone_config,
            "pooling_plan": plan,
            "input_size": features_config["image_size"],
            "resize_shorter": features_config["resize_shorter"],
            "layers": layers,
            "model": str(model_path),
        }
        save_features(output, features, metadata)
        log.info("%s: %d images, dims %s", split, len(ids), {layer: plan[layer]["dim"] for layer in layers})
