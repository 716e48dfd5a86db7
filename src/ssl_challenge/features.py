"""Extract pooled multi-layer features of a frozen backbone, and store them as one ``.npz`` per (model, split).

The file holds one float32 array per layer (``feat1``..``feat5``) and ``metadata``: a JSON string with what is
needed to interpret and reproduce it (backbone config, pooling plan, input size, layers, number of images).
NaN or infinite features are refused when written and when read, naming the file (and the model, when known).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .finite import require_finite
from .io import atomic_path
from .models.pooling import pool_features
from .numerics import configure_torch, numerics_record

# The normalisation of torchvision's ImageNet models, used by the reference evaluation pipelines.
IMAGENET_MEAN_STD: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)
METADATA_KEY = "metadata"


class ImageSource(Protocol):
    """What ``ssl_challenge.data.images`` provides: normalised float batches by index."""

    def __len__(self) -> int: ...

    def load_batch(self, indices: torch.Tensor, augment: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor: ...


def normalise_uint8(images: torch.Tensor, mean_std=IMAGENET_MEAN_STD) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` in 0..255 -> float32 ``(x / 255 - mean) / std`` on the same device."""
    mean = torch.tensor(mean_std[0], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(mean_std[1], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


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


def load_image_batch(images: torch.Tensor | ImageSource, indices: torch.Tensor, device: torch.device,
                     mean_std=IMAGENET_MEAN_STD) -> torch.Tensor:
    """One normalised, un-augmented float batch on ``device`` from a uint8 tensor or an image source."""
    return as_image_source(images, mean_std).load_batch(indices, augment=False, generator=None).to(device)


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
    from .engine.inference import run_frozen

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
    """``({layer: float32 [N, dim]}, metadata)``; ``layers=None`` loads every layer in the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: feature file not found")
    with np.load(path, allow_pickle=False) as archive:
        if METADATA_KEY not in archive.files:
            raise ValueError(f"{path}: not a feature file (no '{METADATA_KEY}' entry)")
        metadata = json.loads(str(archive[METADATA_KEY]))
        available = [name for name in archive.files if name != METADATA_KEY]
        wanted = available if layers is None else list(layers)
        missing = [layer for layer in wanted if layer not in available]
        if missing:
            raise KeyError(f"{path}: no layer(s) {missing}; the file has {sorted(available)}")
        arrays = {layer: archive[layer] for layer in wanted}
    for layer, array in arrays.items():
        require_finite(array, f"{path}: features {layer}", "delete the file and extract the features again; if they "
                       "come out non-finite again, the model that produced them is broken")
    return arrays, metadata


# ------------------------------------------------------------------------------------------------ the workflow stage
def pooling_target(features_config: dict) -> int | str:
    pooling = features_config["pooling"]
    return pooling if pooling == "reference" else int(pooling)


def extract_split_features(
    model_path: str,
    split: str,
    features_config: dict,
    roots: dict,
    classes: Sequence[str],
    output: str,
    threads: int,
    log: logging.Logger,
    data_workers: int = 0,
) -> None:
    """The feature-extraction stage: one model's pooled features of one evaluation split, saved with metadata.
    With 0 ``data_workers`` the split is decoded once into memory (threads) and then run through the model; with
    more, ``data_workers`` processes decode it batch by batch (``data.images.FeatureImages``): the same pixels,
    the same features, without holding the split in memory."""
    from .data.images import FeatureImages, load_image_tensor
    from .data.splits import split_images
    from .devices import select_device
    from .models.backbones import load_backbone
    from .models.pooling import pooling_plan

    configure_torch(threads)
    device = select_device()
    backbone, backbone_config = load_backbone(model_path, device)
    paths, ids, labels = split_images(split, roots, classes)
    if data_workers:
        images = FeatureImages(paths, resize_shorter=features_config["resize_shorter"],
                               final_size=features_config["image_size"], dataset=split)
    else:
        images = load_image_tensor(paths, resize_shorter=features_config["resize_shorter"],
                                   final_size=features_config["image_size"], threads=threads, dataset=split)
    plan = pooling_plan(backbone, features_config["image_size"], pooling_target(features_config))
    layers = list(features_config["layers"])
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


def voc07_split_with_features(features_path, layer, voc07_root, subset, classes):
    """Features of ``layer`` and the VOC label matrix, checked to be in the same image order."""
    from .data.voc07 import read_voc07_labels, voc07_class_names

    classes = list(classes) or voc07_class_names(voc07_root)
    features, metadata = load_features(features_path, [layer])
    ids, labels = read_voc07_labels(voc07_root, subset, classes)
    if list(metadata["image_ids"]) != list(ids):
        raise ValueError(f"{features_path}: image order differs from {voc07_root} ImageSets/Main/{subset}.txt; "
                         "re-extract the features")
    return features[layer], labels, classes
