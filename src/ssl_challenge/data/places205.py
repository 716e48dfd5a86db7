"""Places205 list files (``trainvalsplit_places205/{train,val}_places205.csv``), see :mod:`.layouts`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import layouts


def read_places205_list(root: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray]:
    """Relative image paths (under :func:`layouts.places205_images_dir`) and int64 labels, in file order.

    Despite the ``.csv`` suffix the official lists are space separated: ``a/abbey/gsun_....jpg 0``.
    """
    path = layouts.places205_list_file(root, split)
    if not path.is_file():
        raise FileNotFoundError(f"Places205 {split} list {path} does not exist; expected {layouts.PLACES205_LAYOUT}")
    relative_paths, labels = [], []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{path}:{line_number}: {line!r} is not '<path under images256> <label >= 0>'")
        relative_paths.append(fields[0])
        labels.append(int(fields[1]))
    if not relative_paths:
        raise ValueError(f"{path}: no images listed")
    return relative_paths, np.asarray(labels, dtype=np.int64)


def places205_image_paths(root: str | os.PathLike, relative_paths: list[str]) -> list[Path]:
    """Absolute paths of listed images, whichever of the two accepted image folders the root uses."""
    images_dir = layouts.places205_images_dir(root)
    return [images_dir / relative for relative in relative_paths]
