"""Places205 list files (``trainvalsplit_places205/{train,val}_places205.csv``), see :mod:`.layouts`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import layouts


def read_places205_list(root: str | os.PathLike, split: str) -> tuple[list[str], np.ndarray]:
    """Relative image paths (under :func:`layouts.places205_images_dir`) and int64 labels, in file order.

    Every path must stay inside the images folder (no absolute path, no ``..``, no symbolic link leading out):
    otherwise :class:`layouts.PathOutsideRootError` names the list file and line. Costs one ``lstat`` per line.
    """
    path = layouts.places205_list_file(root, split)
    if not path.is_file():
        raise FileNotFoundError(f"Places205 {split} list {path} does not exist; expected {layouts.PLACES205_LAYOUT}")
    containment = layouts.RootContainment(layouts.places205_images_dir(root))
    relative_paths, labels = [], []
    for line_number, relative, label in layouts.places205_list_lines(path):
        containment.check_listed(relative, f"{path}:{line_number}", syntax_checked=True)
        relative_paths.append(relative)
        labels.append(label)
    if not relative_paths:
        raise ValueError(f"{path}: no images listed")
    return relative_paths, np.asarray(labels, dtype=np.int64)


def places205_image_paths(root: str | os.PathLike, relative_paths: list[str]) -> list[Path]:
    """Absolute paths of listed images, whichever of the two accepted image folders the root uses."""
    images_dir = layouts.places205_images_dir(root)
    return [images_dir / relative for relative in relative_paths]
