"""The evaluation splits the features are extracted on, and their image lists in the file lists' order."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the workflow's wildcard constraints import FEATURE_SPLITS at DAG-build time, without numpy
    import numpy as np

FEATURE_SPLITS = {
    "voc07_trainval": ("voc07", "trainval"),
    "voc07_test": ("voc07", "test"),
    "places205_train": ("places205", "train"),
    "places205_val": ("places205", "val"),
}


def split_images(split: str, roots: dict, classes: Sequence[str]) -> tuple[list[Path], list[str], np.ndarray | None]:
    """Image paths, image ids and (for Places205) labels of an evaluation split, in the file lists' order."""
    dataset, subset = FEATURE_SPLITS[split]
    if dataset == "voc07":
        from .voc07 import read_voc07_labels, voc07_class_names

        root = Path(roots["voc07"])
        ids, _ = read_voc07_labels(root, subset, list(classes) or voc07_class_names(root))
        return [root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg" for image_id in ids], ids, None
    from .places205 import places205_image_paths, read_places205_list

    root = Path(roots["places205"])
    relative_paths, labels = read_places205_list(root, subset)
    return places205_image_paths(root, relative_paths), list(relative_paths), labels
