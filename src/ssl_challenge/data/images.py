"""Image sources for pretraining and feature extraction: one interface (:class:`ImageSource`, and for pretraining
:class:`PretrainingImages`), the ImageNet normalisation, the preloaded pretraining source and the
feature-extraction source.

:class:`PreloadedImages` keeps every image decoded in one uint8 tensor and augments whole batches with tensor
indexing (small images: the embedded data set); :class:`~.file_images.FileImages` decodes each batch from the files
(full-size ImageNet); :func:`.sources.build_image_source` chooses between the two. :class:`FeatureImages` decodes
an evaluation split batch by batch. Every random number comes from the ``generator`` they are given, so that a
resumed run that restores the generator state sees exactly the same batches. Decoding and its errors live in
:mod:`.decoding`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .decoding import CorruptImageError, decode_for_features
from .transforms import (AugmentationConfig, apply_steps_after_crop, draw_resized_crop_parameters,
                         draw_step_parameters, resized_crop_batch)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """Normalised float images [B, 3, crop, crop] of the samples ``indices`` (LongTensor [B])."""
        ...


class PretrainingImages(ImageSource, Protocol):
    """An image source the pretraining loop draws augmented batches from (``engine.train``).

    ``per_sample_seeds`` says how a process makes its slice of a global batch so that N processes see exactly
    the images one process sees. True: each sample is augmented from its own seed (``load_batch_seeded(indices,
    sample_seeds)``), so a process decodes its slice alone (images decoded from files). False: the augmentation
    of a batch is drawn from one generator, so every process draws the whole global batch and keeps its slice
    (cheap for images in memory)."""

    per_sample_seeds: bool


def normalise(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W]: (x / 255 - mean) / std per channel, in a new contiguous tensor.

    The three operations run in place on one float copy laid out [B, 3, H, W] (decoded batches arrive as views of
    [B, H, W, 3]): the values of the same operations out of place, several times faster on a decoded batch."""
    mean_tensor = torch.tensor(mean, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    images = images_uint8.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return images.div_(255.0).sub_(mean_tensor).div_(std_tensor)


def draw_sample_seeds(count: int, generator: torch.Generator) -> list[int]:
    """``count`` 63-bit seeds from ``generator`` (one per sample of a batch)."""
    return torch.randint(0, 2**63 - 1, (count,), generator=generator).tolist()


def run_jobs(jobs: Sequence[Callable[[], np.ndarray]], threads: int) -> list[np.ndarray]:
    """``[job() for job in jobs]``, in a pool of ``threads`` when more than one (PIL releases the GIL while
    decoding); inline with one (a DataLoader worker: the workers are the parallelism)."""
    if threads <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: job(), jobs))


def check_indices(indices: torch.Tensor, size: int) -> torch.Tensor:
    indices = torch.as_tensor(indices, dtype=torch.long)
    if indices.ndim != 1:
        raise ValueError(f"indices must be a 1-d LongTensor, got shape {tuple(indices.shape)}")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise IndexError(f"indices must lie in [0, {size}), got [{int(indices.min())}, {int(indices.max())}]")
    return indices


class FeatureImages:
    """An evaluation split decoded batch by batch with the SVM-feature preprocessing (:func:`decode_for_features`,
    the pixels :func:`load_image_tensor` stores), normalised; never augmented (an ``ImageSource``)."""

    def __init__(self, paths: Sequence[str | os.PathLike], resize_shorter: int, final_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, threads: int = 1,
                 dataset: str | None = None):
        if not paths:
            raise ValueError(f"FeatureImages: no image paths given for {dataset or 'the split'}")
        self.paths, self.resize_shorter, self.final_size = list(paths), int(resize_shorter), int(final_size)
        self.mean, self.std, self.threads, self.dataset = tuple(mean), tuple(std), max(1, int(threads)), dataset

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, index: int) -> np.ndarray:
        try:
            return decode_for_features(self.paths[index], self.resize_shorter, self.final_size)
        except CorruptImageError as error:
            raise error.in_dataset(self.dataset) from error.__cause__

    def load_batch(self, indices: torch.Tensor, augment: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        indices = check_indices(indices, len(self)).tolist()
        arrays = run_jobs([lambda index=index: self.decode(index) for index in indices], self.threads)
        return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), self.mean, self.std)


# ------------------------------------------------------------------------------------------------ preloaded
class PreloadedImages:
    """All images decoded in memory (uint8 [N, 3, H, W], on any device); batches augmented as tensors.

    Augmentation follows ``augmentation`` (:class:`~.transforms.AugmentationConfig`; default: the padded crop
    and flip). The padded crop is CIFAR-style: zero-pad by ``crop_padding`` (black, before normalisation, as
    torchvision's ``RandomCrop(padding=...)``), random ``crop_size`` crop, horizontal flip with probability 0.5;
    the random_resized crop resamples a RandomResizedCrop box of the stored image. Then rotation, colour jitter
    and grayscale when configured. Without augmentation the centre ``crop_size`` crop (the identity when it
    equals the stored size).
    """

    per_sample_seeds = False  # a batch's augmentation is drawn from one generator (see PretrainingImages)

    def __init__(self, images: torch.Tensor, crop_size: int | None = None, crop_padding: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 augmentation: AugmentationConfig | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"PreloadedImages needs uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        height, width = images.shape[2:]
        self.crop_size = int(crop_size or min(height, width))
        if self.crop_size > min(height, width) or crop_padding < 0:
            raise ValueError(f"crop_size {self.crop_size} must fit the stored images ({height}x{width}) and "
                             f"crop_padding {crop_padding} must be >= 0")
        self.images = images
        self.crop_padding = int(crop_padding)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augmentation = augmentation or AugmentationConfig()

    def __len__(self) -> int:
        return self.images.shape[0]

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        indices = check_indices(indices, len(self))
        batch = self.images[indices.to(self.images.device)]
        if not augment:
            return normalise(center_crop(batch, self.crop_size), self.mean, self.std)
        augmentation = self.augmentation
        if augmentation.resolved_crop(preloaded=True) == "padded":
            batch = random_crop_and_flip(batch, self.crop_size, self.crop_padding, generator, augmentation.flip)
        else:
            draws = draw_resized_crop_parameters(len(indices), augmentation.crop_scale, generator)
            batch = resized_crop_batch(batch, draws, self.crop_size, augmentation.flip)
        return normalise(steps_after_crop(batch, augmentation, generator), self.mean, self.std)


def steps_after_crop(batch: torch.Tensor, augmentation: AugmentationConfig,
                     generator: torch.Generator) -> torch.Tensor:
    """Rotation, colour jitter and grayscale of cropped images ([B, 3, S, S], values in [0, 255]); the batch is
    returned untouched (no draws) when none is configured, so the default pipeline is today's exactly."""
    if not augmentation.has_steps_after_crop:
        return batch
    draws = draw_step_parameters(augmentation, batch.shape[0], generator)
    return apply_steps_after_crop(batch.float() / 255.0, augmentation, draws) * 255.0


def center_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = int(round((height - crop_size) / 2)), int(round((width - crop_size) / 2))
    return images[..., top : top + crop_size, left : left + crop_size]


def random_crop_and_flip(images: torch.Tensor, crop_size: int, padding: int,
                         generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch and random horizontal flip, as one gather.

    Draws, in this order: B top offsets, B left offsets, B flip coins, all from the CPU ``generator`` (the coins
    also when ``flip`` is off, so the number of draws never changes).
    """
    batch_size, channels = images.shape[:2]
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    height, width = images.shape[-2:]
    top = torch.randint(0, height - crop_size + 1, (batch_size,), generator=generator)
    left = torch.randint(0, width - crop_size + 1, (batch_size,), generator=generator)
    flip = (torch.rand(batch_size, generator=generator) < 0.5) & flip
    steps = torch.arange(crop_size)
    rows = top[:, None] + steps
    columns = left[:, None] + torch.where(flip[:, None], crop_size - 1 - steps, steps)
    device = images.device
    return images[
        torch.arange(batch_size, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows.to(device)[:, None, :, None],
        columns.to(device)[:, None, None, :],
    ]
