"""Image sources for pretraining and feature extraction.

Two sources share one interface (:class:`ImageSource`): :class:`PreloadedImages` keeps every image decoded in
one uint8 tensor and augments whole batches with tensor indexing (small images: the embedded data set);
:class:`FileImages` decodes JPEGs per batch in a thread pool (full-size ImageNet), its RandomResizedCrop and flip
being torchvision's (``torchvision.transforms.v2``). Every random number comes from the ``generator`` they are
given (FileImages: one seed per sample drawn from it), so that a resumed run that restores the generator state
sees exactly the same batches.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

from .transforms import (AugmentationConfig, apply_steps_after_crop, concat_step_draws,
                         draw_resized_crop_parameters, draw_step_parameters, resized_crop_batch)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROGRESS_BAR_FROM = 2000  # images; below this a bar is noise in the logs
# torchvision's random transforms draw from torch's global CPU generator: FileImages seeds it per sample inside
# torch.random.fork_rng, one thread of this process at a time
GLOBAL_RNG_LOCK = threading.Lock()


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
            raise decode_error(path, error) from error


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at ``path``, read from its header only (Pillow opens lazily, a few tens of
    microseconds); errors as :func:`open_rgb`'s (a header Pillow cannot parse is a :class:`CorruptImageError`
    naming the file; pixel data damaged past the header is found only by decoding)."""
    with open(path, "rb") as handle:
        try:
            with Image.open(handle) as image:
                return image.size
        except DECODE_ERRORS as error:
            raise decode_error(path, error) from error


def decode_error(path: str | os.PathLike, error: Exception) -> Exception:
    """What to raise for a Pillow error on ``path``: an OSError naming it when the disk failed (it has an errno),
    else a :class:`CorruptImageError` (the file's content)."""
    if isinstance(error, OSError) and error.errno is not None:
        return OSError(error.errno, error.strerror, os.fspath(path))
    return CorruptImageError(path, f"{type(error).__name__}: {error}")


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


def report_skipped(corrupt: Sequence[CorruptImageError], total: int, dataset: str | None,
                   log: Callable[[str], None] | None) -> None:
    log = log or logging.getLogger(__name__).warning
    log(f"skipped {len(corrupt)} corrupt image(s) of {total} in {dataset or 'the image set'} "
        "(pretrain_data.skip_corrupt_images):")
    for error in corrupt:
        log(f"  skipped {error.path}: {error.reason}")


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


# ------------------------------------------------------------------------------------------------ from files
class ResizedCropDraw(NamedTuple):
    """One sample's RandomResizedCrop box (torchvision's ``make_params``: top, left, height, width), its flip, and
    the (width, height) of the image it was drawn for."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    image_size: tuple[int, int]


class FileImages:
    """Images decoded from their files for every batch (a thread pool of ``threads``).

    Augmentation follows ``augmentation`` (default: the random_resized crop and flip). The random_resized crop and
    flip are torchvision's ``v2.Compose([v2.RandomResizedCrop(crop_size, scale, ratio), v2.RandomHorizontalFlip()])``
    on the decoded PIL image (``scale``: ``augmentation.crop_scale`` when given), bilinear with antialiasing: the
    box is what the transform's ``make_params`` samples (ten rejection tries, then its centre-crop fallback) and the
    coin what RandomHorizontalFlip draws after it, with torch's global generator seeded by the first number of the
    sample's generator (:meth:`draw_resized_crops`: in the calling thread, from the image's size read from its
    header); the pixels are those of ``v2.functional.resized_crop`` and ``horizontal_flip``, made in the pool. The
    padded crop squares the image to ``resize_shorter`` (as the preloaded source stores it), zero-pads it by
    ``crop_padding``, takes a random ``crop_size`` crop and flips it by a coin, its five numbers drawn from the
    sample's generator. Then rotation, colour jitter and grayscale when configured (on the decoded batch, their
    numbers drawn from the sample's generator next). Without augmentation: shorter side to ``resize_shorter``,
    centre ``crop_size`` crop.

    An undecodable image raises :class:`CorruptImageError` naming it and ``dataset``. With ``skip_corrupt``
    (pretraining only) its samples are replaced by the next decodable image in list order (cyclically), with the
    same sample seed (a random_resized box is drawn for the substitute's size), so batches depend on the files
    only; each corrupt image is logged once with the running count (:attr:`corrupt_paths`).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], crop_size: int, resize_shorter: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, threads: int = 2,
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 augmentation: AugmentationConfig | None = None, crop_padding: int = 0,
                 dataset: str | None = None, skip_corrupt: bool = False,
                 log: Callable[[str], None] | None = None):
        from torchvision.transforms import v2  # here: the preloaded default never needs it

        if crop_size > resize_shorter:
            raise ValueError(f"crop_size {crop_size} must be <= resize_shorter {resize_shorter}")
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"scale {scale} must lie in (0, 1] and ratio {ratio} be positive, both ascending")
        self.paths = list(paths)
        self.crop_size, self.resize_shorter = int(crop_size), int(resize_shorter)
        self.mean, self.std = tuple(mean), tuple(std)
        self.threads = max(1, int(threads))
        self.augmentation = augmentation or AugmentationConfig(crop_scale=scale)
        self.scale, self.ratio = self.augmentation.crop_scale, tuple(float(value) for value in ratio)
        self.crop_transform = v2.RandomResizedCrop(self.crop_size, scale=self.scale, ratio=self.ratio,
                                                   interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        self.crop_padding = int(crop_padding)
        self.dataset, self.skip_corrupt = dataset, skip_corrupt
        self.log = log or logging.getLogger(__name__).warning
        self.corrupt_paths: dict[int, str] = {}  # sample index -> path, of the corrupt images met so far
        self._corrupt_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """Augmented: one seed per sample drawn from ``generator``, then :meth:`load_batch_seeded`."""
        indices = check_indices(indices, len(self))
        if augment:
            return self.load_batch_seeded(indices, draw_sample_seeds(len(indices), generator))
        arrays = run_jobs([lambda index=index: self.decode_sample(index, self.centred) for index in indices.tolist()],
                          self.threads)
        return normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), self.mean, self.std)

    def load_batch_seeded(self, indices: torch.Tensor, sample_seeds: Sequence[int]) -> torch.Tensor:
        """The augmented batch, sample k drawing all its numbers from a generator seeded with ``sample_seeds[k]``:
        the random_resized crop one seed (:meth:`draw_resized_crops` seeds torch's global generator with it), the
        padded crop five numbers; then those of the steps after the crop. A sample's augmentation depends on its
        seed and image only, not on the batch it is in nor on the process or thread that decodes it."""
        indices = check_indices(indices, len(self)).tolist()
        if len(sample_seeds) != len(indices):
            raise ValueError(f"{len(sample_seeds)} sample seeds for {len(indices)} samples")
        generators = [torch.Generator().manual_seed(int(seed)) for seed in sample_seeds]
        if self.augmentation.resolved_crop(preloaded=False) == "padded":
            draws = [self.draw_crop_parameters(1, generator)[0].tolist() for generator in generators]
            arrays = run_jobs([lambda index=index, draw=draw: self.decode_sample(index, self.padded, draw)
                               for index, draw in zip(indices, draws)], self.threads)
        else:
            arrays = self.resized_crop_batch(indices, [draw_sample_seeds(1, generator)[0] for generator in generators])
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        if self.augmentation.has_steps_after_crop:
            steps = concat_step_draws([draw_step_parameters(self.augmentation, 1, generator)
                                       for generator in generators])
            batch = apply_steps_after_crop(batch.float() / 255.0, self.augmentation, steps) * 255.0
        return normalise(batch, self.mean, self.std)

    def resized_crop_batch(self, indices: Sequence[int], crop_seeds: Sequence[int]) -> list[np.ndarray]:
        """uint8 [crop, crop, 3] random_resized crops of samples ``indices``: each image's size read from its
        header and its box and coin drawn here, in the calling thread (:meth:`draw_resized_crops`); the decoding,
        cropping and resizing in the pool. An image whose data turns out corrupt (``skip_corrupt``) sends its
        sample to the next readable image, with a box drawn again from the same seed for that image's size."""
        arrays: list[np.ndarray | None] = [None] * len(indices)
        candidates, pending = list(indices), list(range(len(indices)))
        while pending:
            sized = [self.first_readable(candidates[slot], image_size) for slot in pending]
            for slot, (candidate, _) in zip(pending, sized):
                candidates[slot] = candidate
            draws = self.draw_resized_crops([size for _, size in sized], [crop_seeds[slot] for slot in pending])
            results = run_jobs([lambda slot=slot, draw=draw: self.try_resized_crop(candidates[slot], draw)
                                for slot, draw in zip(pending, draws)], self.threads)
            retry = []
            for slot, result in zip(pending, results):
                if isinstance(result, CorruptImageError):
                    self._record_corrupt(candidates[slot], result)
                    retry.append(slot)
                else:
                    arrays[slot] = result
            pending = retry
        return arrays

    def draw_resized_crops(self, sizes: Sequence[tuple[int, int]], crop_seeds: Sequence[int]) -> list[ResizedCropDraw]:
        """For each (width, height) and seed: torch's global CPU generator seeded with it, then
        ``v2.RandomResizedCrop.make_params`` and RandomHorizontalFlip's coin (``torch.rand(1) < 0.5``, drawn only
        when ``augmentation.flip``), the draws of ``v2.Compose([RandomResizedCrop, RandomHorizontalFlip])`` after
        ``torch.manual_seed(seed)``. The global generator's state is restored afterwards (``fork_rng``); CUDA
        generators are not touched."""
        draws = []
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            for (width, height), seed in zip(sizes, crop_seeds):
                torch.default_generator.manual_seed(int(seed))
                # make_params reads the size only: an empty image of that size stands in for the decoded one
                params = self.crop_transform.make_params([torch.empty((0, height, width), dtype=torch.uint8)])
                flip = self.augmentation.flip and bool(torch.rand(1) < 0.5)
                draws.append(ResizedCropDraw(int(params["top"]), int(params["left"]), int(params["height"]),
                                             int(params["width"]), flip, (width, height)))
        return draws

    def first_readable(self, index: int, read: Callable[[str | os.PathLike], object]) -> tuple[int, object]:
        """(candidate, ``read(path)``) of sample ``index``'s image or, with ``skip_corrupt``, of the first readable
        one after it in list order (cyclically); without ``skip_corrupt`` a corrupt image raises naming it."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.corrupt_paths:
                continue
            try:
                return candidate, read(self.paths[candidate])
            except CorruptImageError as error:
                if not self.skip_corrupt:
                    raise error.in_dataset(self.dataset) from error.__cause__
                self._record_corrupt(candidate, error)
        raise ValueError(f"none of the {len(self.paths)} images of {self.dataset or 'the set'} could be decoded")

    def decode_sample(self, index: int, decode: Callable[..., np.ndarray], *draw) -> np.ndarray:
        """``decode(path, *draw)`` of sample ``index``, or (``skip_corrupt``) of the substitute of a corrupt one."""
        return self.first_readable(index, lambda path: decode(path, *draw))[1]

    def _record_corrupt(self, index: int, error: CorruptImageError) -> None:
        with self._corrupt_lock:
            if index in self.corrupt_paths:
                return
            self.corrupt_paths[index] = error.path
            self.log(f"skipped corrupt image {len(self.corrupt_paths)} of {self.dataset or 'the image set'} "
                     f"(pretrain_data.skip_corrupt_images): {error.path}: {error.reason}; its samples use the next "
                     "readable image")

    def draw_crop_parameters(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """[B, 5] for the padded crop: area fraction and log aspect ratio (unused), horizontal and vertical position
        in [0, 1), flip coin."""
        return draw_resized_crop_parameters(batch_size, self.scale, generator, self.ratio)

    def try_resized_crop(self, index: int, draw: ResizedCropDraw) -> np.ndarray | CorruptImageError:
        """:meth:`resized_crop` of image ``index``; a corrupt image is returned (``skip_corrupt``) or raised."""
        try:
            return self.resized_crop(self.paths[index], draw)
        except CorruptImageError as error:
            if not self.skip_corrupt:
                raise error.in_dataset(self.dataset) from error.__cause__
            return error

    def resized_crop(self, path, draw: ResizedCropDraw) -> np.ndarray:
        """torchvision's ``resized_crop`` (bilinear, antialiased) of the decoded image, then ``horizontal_flip``
        when the coin says so: uint8 [crop, crop, 3]."""
        from torchvision.transforms.v2 import InterpolationMode, functional

        image = open_rgb(path)
        if image.size != draw.image_size:
            raise ValueError(f"image {os.fspath(path)} decodes to {image.size[0]}x{image.size[1]} but its header "
                             f"says {draw.image_size[0]}x{draw.image_size[1]}; re-encode the file")
        image = functional.resized_crop(image, draw.top, draw.left, draw.height, draw.width,
                                        [self.crop_size, self.crop_size], interpolation=InterpolationMode.BILINEAR,
                                        antialias=True)
        if draw.flip:
            image = functional.horizontal_flip(image)
        return np.asarray(image, dtype=np.uint8)

    def padded(self, path, draw: Sequence[float]) -> np.ndarray:
        """The padded crop of one image: squared to ``resize_shorter``, zero-padded, cropped at the drawn
        position (columns 2 and 3 of the draw), flipped by the coin (column 4)."""
        square = decode_for_features(path, self.resize_shorter, self.resize_shorter)
        padding = self.crop_padding
        padded = np.pad(square, ((padding, padding), (padding, padding), (0, 0)))
        room = padded.shape[0] - self.crop_size + 1
        top, left = min(room - 1, int(draw[3] * room)), min(room - 1, int(draw[2] * room))
        crop = padded[top : top + self.crop_size, left : left + self.crop_size]
        if self.augmentation.flip and draw[4] < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop)

    def centred(self, path) -> np.ndarray:
        image = resize_shorter_side(open_rgb(path), self.resize_shorter)
        width, height = image.size
        left, top = int(round((width - self.crop_size) / 2)), int(round((height - self.crop_size) / 2))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        return np.asarray(image, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ choice
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
