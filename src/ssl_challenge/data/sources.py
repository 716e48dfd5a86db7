"""The choice between the two pretraining image sources: decoded once and kept in memory
(:class:`.images.PreloadedImages`, small images) or decoded per batch from the files
(:class:`.file_images.FileImages`, full-size ImageNet)."""
from __future__ import annotations

import os
from typing import Callable, Sequence

from .decoding import load_image_tensor
from .file_images import FileImages
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageSource, PreloadedImages
from .transforms import AugmentationConfig


def build_image_source(paths: Sequence[str | os.PathLike], preload: bool, *, resize_shorter: int,
                       crop_size: int, crop_padding: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD, threads: int = 2,
                       augmentation: AugmentationConfig | None = None, skip_corrupt_images: bool = False,
                       log: Callable[[str], None] | None = None) -> ImageSource:
    """Preloaded: every image squared to ``resize_shorter`` once, then crops of ``crop_size`` as tensors.
    From files: crops of ``crop_size`` decoded per batch. The crop and the steps after it follow
    ``augmentation`` (default: padded crops when preloaded, torchvision's RandomResizedCrop from files);
    ``crop_padding`` pads padded crops only. ``skip_corrupt_images``: corrupt images are dropped at load time
    (preloaded) or their samples replaced by the next readable image (from files), logged to ``log``; otherwise the
    first one is an error naming it."""
    augmentation = augmentation or AugmentationConfig()
    if preload:
        images = load_image_tensor(paths, resize_shorter=resize_shorter, final_size=resize_shorter, threads=threads,
                                   dataset="pretraining images", skip_corrupt=skip_corrupt_images, log=log)
        return PreloadedImages(images, crop_size=crop_size, crop_padding=crop_padding, mean=mean, std=std,
                               augmentation=augmentation)
    if crop_padding and augmentation.crop == "auto":
        raise ValueError(f"config key 'pretrain_data.crop_padding' = {crop_padding} pads only padded crops, and "
                         "images read from files (pretrain_data.preload: false) get random_resized crops unless "
                         "the model's augmentation.crop is 'padded'; set one of the two")
    return FileImages(paths, crop_size=crop_size, resize_shorter=resize_shorter, mean=mean, std=std, threads=threads,
                      augmentation=augmentation, crop_padding=crop_padding, dataset="pretraining images",
                      skip_corrupt=skip_corrupt_images, log=log)
