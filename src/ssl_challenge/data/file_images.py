"""Pretraining images decoded from their files for every batch (full-size ImageNet): torchvision's
RandomResizedCrop and flip (``torchvision.transforms.v2``) or the padded crop, then the steps after the crop, each
sample drawing its numbers from its own seed, so that batches depend on the files and the seeds only."""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from .decoding import CorruptImageError, decode_for_features, image_size, open_rgb, resize_shorter_side
from .images import IMAGENET_MEAN, IMAGENET_STD, check_indices, draw_sample_seeds, normalise, run_jobs
from .transforms import (AugmentationConfig, apply_steps_after_crop, concat_step_draws,
                         draw_resized_crop_parameters, draw_step_parameters)

# torchvision's random transforms draw from torch's global CPU generator: FileImages seeds it per sample inside
# torch.random.fork_rng, one thread of this process at a time
GLOBAL_RNG_LOCK = threading.Lock()


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

    per_sample_seeds = True  # each sample augmented from its own seed (:meth:`load_batch_seeded`)

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
