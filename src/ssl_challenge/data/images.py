"""Image sources for pretraining and feature extraction.

Two sources share one interface (:class:`ImageSource`): :class:`PreloadedImages` keeps every image decoded in
one uint8 tensor and augments whole batches with tensor indexing (small images: the embedded data set);
:class:`FileImages` decodes JPEGs per batch in a thread pool (full-size ImageNet). Both draw every random number
from the ``generator`` they are given, in a fixed number of draws per sample, so that a resumed run that restores
the generator state sees exactly the same batches.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROGRESS_BAR_FROM = 2000  # images; below this a bar is noise in the logs


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """Normalised float images [B, 3, crop, crop] of the samples ``indices`` (LongTensor [B])."""
        ...


# ------------------------------------------------------------------------------------------------ decoding
# What Pillow raises on undecodable data: truncation, an unknown format, a broken stream or checksum, a bomb.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class CorruptImageError(ValueError):
    """An image file Pillow cannot decode; the message names the file (and the data set or split when known)."""

    def __init__(self, path: str | os.PathLike, reason: str, dataset: str | None = None):
        self.path, self.reason, self.dataset = os.fspath(path), reason, dataset
        where = f" ({dataset})" if dataset else ""
        super().__init__(f"cannot decode image {self.path}{where}: {reason}; replace the file with a readable copy "
                         "(pretraining images can be skipped instead with pretrain_data.skip_corrupt_images: true; "
                         "evaluation splits cannot)")

    def __reduce__(self):  # picklable across processes despite the custom signature
        return CorruptImageError, (self.path, self.reason, self.dataset)

    def in_dataset(self, dataset: str | None) -> "CorruptImageError":
        return CorruptImageError(self.path, self.reason, dataset) if dataset and not self.dataset else self


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` in RGB; a file Pillow cannot decode raises :class:`CorruptImageError` naming it.

    Truncation is always caught, because ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False (checked here: any
    imported code could set it, and truncated images would then decode as grey): Pillow raises for a JPEG cut at
    any byte, and loads a cut PNG only when the cut removed nothing but its checksums and end chunk (the pixels
    are then complete). Bytes damaged in place inside a JPEG's compressed data decode silently (libjpeg only
    warns); no decoder can see that without a checksum of the file.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some imported code): truncated "
                           "images would decode silently; leave it False")
    with open(path, "rb") as handle:  # a missing or unreadable file is an OSError naming it, not a corrupt image
        try:
            with Image.open(handle) as image:
                return image.convert("RGB")
        except DECODE_ERRORS as error:
            if isinstance(error, OSError) and error.errno is not None:  # the disk failed, not the file's content
                raise OSError(error.errno, error.strerror, os.fspath(path)) from error
            raise CorruptImageError(path, f"{type(error).__name__}: {error}") from error


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, aspect kept (longer side truncated like torchvision's ``Resize(int)``)."""
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return image if new_size == image.size else image.resize(new_size, Image.BILINEAR)


def decode_for_features(path: str | os.PathLike, resize_shorter: int, final_size: int) -> np.ndarray:
    """The SVM-feature preprocessing: shorter side to ``resize_shorter``, then ``final_size`` squared, no crop."""
    image = resize_shorter_side(open_rgb(path), resize_shorter)
    if image.size != (final_size, final_size):
        image = image.resize((final_size, final_size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_image_tensor(
    paths: Sequence[str | os.PathLike],
    resize_shorter: int = 256,
    final_size: int = 224,
    threads: int = 2,
    progress: bool | None = None,
    dataset: str | None = None,
    skip_corrupt: bool = False,
    log: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Decode every image into uint8 [N, 3, final_size, final_size] (PIL, bilinear, a pool of ``threads``).

    ``progress`` None shows a tqdm bar from :data:`PROGRESS_BAR_FROM` images on. An undecodable image raises
    :class:`CorruptImageError` naming it and ``dataset``; with ``skip_corrupt`` (pretraining only: evaluation
    splits must keep their label alignment) it is left out instead, and the count and paths go to ``log``.
    """
    from tqdm import tqdm

    if not paths:
        raise ValueError("load_image_tensor: no image paths given")

    def decode(path):
        try:
            return decode_for_features(path, resize_shorter, final_size)
        except CorruptImageError as error:
            if not skip_corrupt:
                raise error.in_dataset(dataset) from error.__cause__
            return error

    images = np.empty((len(paths), final_size, final_size, 3), dtype=np.uint8)
    show = len(paths) >= PROGRESS_BAR_FROM if progress is None else progress
    corrupt, kept = [], 0
    # mininterval: in a job log (no terminal) every refresh is a new line
    with ThreadPoolExecutor(max(1, threads)) as pool, tqdm(total=len(paths), disable=not show, mininterval=5,
                                                            desc="decoding images", unit="img") as bar:
        for array in pool.map(decode, paths):
            if isinstance(array, CorruptImageError):
                corrupt.append(array)
            else:
                images[kept] = array
                kept += 1
            bar.update()
    if corrupt:
        report_skipped(corrupt, len(paths), dataset, log)
    if not kept:
        raise ValueError(f"none of the {len(paths)} images of {dataset or 'the set'} could be decoded")
    return torch.from_numpy(images[:kept]).permute(0, 3, 1, 2).contiguous()


def report_skipped(corrupt: Sequence[CorruptImageError], total: int, dataset: str | None,
                   log: Callable[[str], None] | None) -> None:
    log = log or logging.getLogger(__name__).warning
    log(f"skipped {len(corrupt)} corrupt image(s) of {total} in {dataset or 'the image set'} "
        "(pretrain_data.skip_corrupt_images):")
    for error in corrupt:
        log(f"  skipped {error.path}: {error.reason}")


def normalise(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, H, W]: (x / 255 - mean) / std per channel."""
    mean_tensor = torch.tensor(mean, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    return (images_uint8.float() / 255.0 - mean_tensor) / std_tensor


def check_indices(indices: torch.Tensor, size: int) -> torch.Tensor:
    indices = torch.as_tensor(indices, dtype=torch.long)
    if indices.ndim != 1:
        raise ValueError(f"indices must be a 1-d LongTensor, got shape {tuple(indices.shape)}")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise IndexError(f"indices must lie in [0, {size}), got [{int(indices.min())}, {int(indices.max())}]")
    return indices


# ------------------------------------------------------------------------------------------------ preloaded
class PreloadedImages:
    """All images decoded in memory (uint8 [N, 3, H, W], on any device); batches augmented as tensors.

    Augmentation is CIFAR-style: zero-pad by ``crop_padding`` (black, before normalisation, as torchvision's
    ``RandomCrop(padding=...)``), random ``crop_size`` crop, horizontal flip with probability 0.5. Without
    augmentation the centre ``crop_size`` crop (the identity when it equals the stored size).
    """

    def __init__(self, images: torch.Tensor, crop_size: int | None = None, crop_padding: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
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

    def __len__(self) -> int:
        return self.images.shape[0]

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        indices = check_indices(indices, len(self))
        batch = self.images[indices.to(self.images.device)]
        if augment:
            batch = random_crop_and_flip(batch, self.crop_size, self.crop_padding, generator)
        else:
            batch = center_crop(batch, self.crop_size)
        return normalise(batch, self.mean, self.std)


def center_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = int(round((height - crop_size) / 2)), int(round((width - crop_size) / 2))
    return images[..., top : top + crop_size, left : left + crop_size]


def random_crop_and_flip(images: torch.Tensor, crop_size: int, padding: int,
                         generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch and random horizontal flip, as one gather.

    Draws, in this order: B top offsets, B left offsets, B flip coins, all from the CPU ``generator``.
    """
    batch_size, channels = images.shape[:2]
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    height, width = images.shape[-2:]
    top = torch.randint(0, height - crop_size + 1, (batch_size,), generator=generator)
    left = torch.randint(0, width - crop_size + 1, (batch_size,), generator=generator)
    flip = torch.rand(batch_size, generator=generator) < 0.5
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


# ------------------------------------------------------------------------------------------------ from files
class FileImages:
    """Images decoded from their files for every batch (a thread pool of ``threads``).

    Augmentation is RandomResizedCrop-style (area fraction in ``scale``, aspect ratio log-uniform in ``ratio``,
    then ``crop_size`` squared, bilinear) plus a horizontal flip. To draw a fixed five numbers per sample whatever
    the image sizes, a crop that does not fit is clamped to the image instead of torchvision's ten rejection
    tries. Without augmentation: shorter side to ``resize_shorter``, centre ``crop_size`` crop.

    An undecodable image raises :class:`CorruptImageError` naming it and ``dataset``. With ``skip_corrupt``
    (pretraining only) its samples are replaced by the next decodable image in list order (cyclically), with the
    same draws, so batches depend on the files only; each corrupt image is logged once with the running count
    (:attr:`corrupt_paths`).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], crop_size: int, resize_shorter: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, threads: int = 2,
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 dataset: str | None = None, skip_corrupt: bool = False,
                 log: Callable[[str], None] | None = None):
        if crop_size > resize_shorter:
            raise ValueError(f"crop_size {crop_size} must be <= resize_shorter {resize_shorter}")
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"scale {scale} must lie in (0, 1] and ratio {ratio} be positive, both ascending")
        self.paths = list(paths)
        self.crop_size, self.resize_shorter = int(crop_size), int(resize_shorter)
        self.mean, self.std = tuple(mean), tuple(std)
        self.threads = max(1, int(threads))
        self.scale, self.ratio = scale, ratio
        self.dataset, self.skip_corrupt = dataset, skip_corrupt
        self.log = log or logging.getLogger(__name__).warning
        self.corrupt_paths: dict[int, str] = {}  # sample index -> path, of the corrupt images met so far
        self._corrupt_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        indices = check_indices(indices, len(self)).tolist()
        if augment:
            draws = self.draw_crop_parameters(len(indices), generator).tolist()
            jobs = [lambda index=index, draw=draw: self.decode_sample(index, self.augmented, draw)
                    for index, draw in zip(indices, draws)]
        else:
            jobs = [lambda index=index: self.decode_sample(index, self.centred) for index in indices]
        with ThreadPoolExecutor(self.threads) as pool:
            arrays = list(pool.map(lambda job: job(), jobs))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return normalise(batch, self.mean, self.std)

    def decode_sample(self, index: int, decode: Callable[..., np.ndarray], *draw) -> np.ndarray:
        """``decode(path, *draw)`` of sample ``index``, or (``skip_corrupt``) of the substitute of a corrupt one."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.corrupt_paths:
                continue
            try:
                return decode(self.paths[candidate], *draw)
            except CorruptImageError as error:
                if not self.skip_corrupt:
                    raise error.in_dataset(self.dataset) from error.__cause__
                self._record_corrupt(candidate, error)
        raise ValueError(f"none of the {len(self.paths)} images of {self.dataset or 'the set'} could be decoded")

    def _record_corrupt(self, index: int, error: CorruptImageError) -> None:
        with self._corrupt_lock:
            if index in self.corrupt_paths:
                return
            self.corrupt_paths[index] = error.path
            self.log(f"skipped corrupt image {len(self.corrupt_paths)} of {self.dataset or 'the image set'} "
                     f"(pretrain_data.skip_corrupt_images): {error.path}: {error.reason}; its samples use the next "
                     "readable image")

    def draw_crop_parameters(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """[B, 5]: area fraction, log aspect ratio, horizontal and vertical position in [0, 1), flip coin."""
        uniform = torch.rand(batch_size, 5, generator=generator, dtype=torch.float64)
        low_ratio, high_ratio = math.log(self.ratio[0]), math.log(self.ratio[1])
        uniform[:, 0] = self.scale[0] + (self.scale[1] - self.scale[0]) * uniform[:, 0]
        uniform[:, 1] = low_ratio + (high_ratio - low_ratio) * uniform[:, 1]
        return uniform

    def augmented(self, path, draw: Sequence[float]) -> np.ndarray:
        area_fraction, log_ratio, x_position, y_position, coin = draw
        image = open_rgb(path)
        width, height = image.size
        area = area_fraction * width * height
        crop_width = min(width, max(1, round(math.sqrt(area * math.exp(log_ratio)))))
        crop_height = min(height, max(1, round(math.sqrt(area / math.exp(log_ratio)))))
        left = min(width - crop_width, int(x_position * (width - crop_width + 1)))
        top = min(height - crop_height, int(y_position * (height - crop_height + 1)))
        box = (left, top, left + crop_width, top + crop_height)
        image = image.resize((self.crop_size, self.crop_size), Image.BILINEAR, box=box)
        if coin < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(image, dtype=np.uint8)

    def centred(self, path) -> np.ndarray:
        image = resize_shorter_side(open_rgb(path), self.resize_shorter)
        width, height = image.size
        left, top = int(round((width - self.crop_size) / 2)), int(round((height - self.crop_size) / 2))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(image, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ choice
def build_image_source(paths: Sequence[str | os.PathLike], preload: bool, *, resize_shorter: int,
                       crop_size: int, crop_padding: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD, threads: int = 2, skip_corrupt_images: bool = False,
                       log: Callable[[str], None] | None = None) -> ImageSource:
    """Preloaded: every image squared to ``resize_shorter`` once, then padded random crops of ``crop_size``.
    From files: RandomResizedCrop-style crops of ``crop_size`` (``crop_padding`` must then be 0).
    ``skip_corrupt_images``: corrupt images are dropped at load time (preloaded) or their samples replaced by the
    next readable image (from files), logged to ``log``; otherwise the first one is an error naming it."""
    if preload:
        images = load_image_tensor(paths, resize_shorter=resize_shorter, final_size=resize_shorter, threads=threads,
                                   dataset="pretraining images", skip_corrupt=skip_corrupt_images, log=log)
        return PreloadedImages(images, crop_size=crop_size, crop_padding=crop_padding, mean=mean, std=std)
    if crop_padding:
        raise ValueError(f"config key 'pretrain_data.crop_padding' = {crop_padding} applies only to preloaded "
                         "images (pretrain_data.preload: true); set it to 0 for images read from files")
    return FileImages(paths, crop_size=crop_size, resize_shorter=resize_shorter, mean=mean, std=std, threads=threads,
                      dataset="pretraining images", skip_corrupt=skip_corrupt_images, log=log)
