"""Decoding image files: Pillow to RGB, the named error for an undecodable file, the shorter-side resize, and a
whole split decoded into one uint8 tensor (the preloaded pretraining images and the feature images' pixels)."""
from __future__ import annotations

import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile

PROGRESS_BAR_FROM = 2000  # images; below this a bar is noise in the logs
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


def report_skipped(corrupt: Sequence[CorruptImageError], total: int, dataset: str | None,
                   log: Callable[[str], None] | None) -> None:
    log = log or logging.getLogger(__name__).warning
    log(f"skipped {len(corrupt)} corrupt image(s) of {total} in {dataset or 'the image set'} "
        "(pretrain_data.skip_corrupt_images):")
    for error in corrupt:
        log(f"  skipped {error.path}: {error.reason}")
