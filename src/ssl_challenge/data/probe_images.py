"""The linear probe's image pipelines (Places205 and ImageNet tracks), as the reference's
(OpenSelfSup linear_classification/places205/r50_multihead.py):

- training: Resize(256) (shorter side), CenterCrop(256), RandomCrop(224), horizontal flip;
- validation: Resize(256), CenterCrop(224).

256 and 224 are ``resize_shorter`` and ``crop_size`` (the workflow passes ``features.resize_shorter`` and
``features.image_size``, so the full-scale configuration gets the reference sizes and smaller ones scale both).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .decoding import CorruptImageError, open_rgb, resize_shorter_side
from .images import IMAGENET_MEAN, IMAGENET_STD, check_indices, draw_sample_seeds, normalise, run_jobs

DRAWS_PER_SAMPLE = 3  # vertical and horizontal crop position in [0, 1), flip coin


def centre_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom) of ``size`` squared."""
    left, top = int(round((width - size) / 2)), int(round((height - size) / 2))
    return left, top, left + size, top + size


class ProbeImages:
    """Images read from files for the probe, decoded per batch in a pool of ``threads`` (an ``ImageSource``)."""

    def __init__(self, paths: Sequence[str | os.PathLike], resize_shorter: int, crop_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, threads: int = 2,
                 dataset: str | None = None):
        if not 0 < crop_size <= resize_shorter:
            raise ValueError(f"probe crop_size {crop_size} (features.image_size) must lie in (0, resize_shorter "
                             f"{resize_shorter}] (features.resize_shorter)")
        self.paths = list(paths)
        self.resize_shorter, self.crop_size = int(resize_shorter), int(crop_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.threads = max(1, int(threads))
        self.dataset = dataset  # named in the error of an undecodable image

    def __len__(self) -> int:
        return len(self.paths)

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """Normalised float [B, 3, crop, crop]; with ``augment`` the training pipeline, one seed per sample drawn
        from ``generator`` (:meth:`load_batch_seeded`)."""
        indices = check_indices(indices, len(self))
        if augment:
            return self.load_batch_seeded(indices, draw_sample_seeds(len(indices), generator))
        arrays = run_jobs([lambda index=index: self.validation_crop(self.paths[index]) for index in indices.tolist()],
                          self.threads)
        return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), self.mean, self.std)

    def load_batch_seeded(self, indices: torch.Tensor, sample_seeds: Sequence[int]) -> torch.Tensor:
        """The training pipeline, sample k's :data:`DRAWS_PER_SAMPLE` numbers drawn from a generator seeded with
        ``sample_seeds[k]`` (so they do not depend on the batch or the process that decodes it)."""
        indices = check_indices(indices, len(self)).tolist()
        if len(sample_seeds) != len(indices):
            raise ValueError(f"{len(sample_seeds)} sample seeds for {len(indices)} samples")
        draws = [torch.rand(DRAWS_PER_SAMPLE, generator=torch.Generator().manual_seed(int(seed)),
                            dtype=torch.float64).tolist() for seed in sample_seeds]
        arrays = run_jobs([lambda index=index, draw=draw: self.training_crop(self.paths[index], draw)
                           for index, draw in zip(indices, draws)], self.threads)
        return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), self.mean, self.std)

    def open(self, path) -> Image.Image:
        try:
            return open_rgb(path)
        except CorruptImageError as error:
            raise error.in_dataset(self.dataset) from error.__cause__

    def training_crop(self, path, draw: Sequence[float]) -> np.ndarray:
        """Resize, CenterCrop(resize_shorter), RandomCrop(crop_size) at the drawn position, flip by the coin."""
        image = resize_shorter_side(self.open(path), self.resize_shorter)
        image = image.crop(centre_box(*image.size, self.resize_shorter))
        room = self.resize_shorter - self.crop_size + 1
        top, left = int(draw[0] * room), int(draw[1] * room)
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        if draw[2] < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(image, dtype=np.uint8)

    def validation_crop(self, path) -> np.ndarray:
        """Resize(resize_shorter), CenterCrop(crop_size)."""
        image = resize_shorter_side(self.open(path), self.resize_shorter)
        return np.asarray(image.crop(centre_box(*image.size, self.crop_size)), dtype=np.uint8)
