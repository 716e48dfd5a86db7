"""ImageNet image lists for pretraining (labels are never used), see :mod:`.layouts`."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import layouts


def list_imagenet_images(root: str | os.PathLike, split: str = "train") -> list[Path]:
    """Every image under ``<root>/<split>/``, in class folders or directly in it, sorted by relative path.

    The sort makes the list (and so every sample index of a run) independent of the file system's order.
    A class folder or image that is a symbolic link must resolve inside ``root``
    (:class:`layouts.PathOutsideRootError` names the link); the listing's file types cost no ``stat``.
    """
    split_dir = layouts.imagenet_split_dir(root, split)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ImageNet {split} folder {split_dir} does not exist; "
                                f"expected {layouts.IMAGENET_LAYOUT}")
    containment = layouts.RootContainment(root)
    where = f"ImageNet {split} listing"
    containment.check_resolved(split_dir, where)
    relative_paths = []
    for entry in os.scandir(split_dir):
        if entry.is_symlink():
            containment.check_resolved(entry.path, where)
        if entry.is_dir():
            for image in os.scandir(entry.path):
                if layouts.is_image_file(image.name):
                    if image.is_symlink():
                        containment.check_resolved(image.path, where)
                    relative_paths.append(f"{entry.name}/{image.name}")
        elif layouts.is_image_file(entry.name):
            relative_paths.append(entry.name)
    if not relative_paths:
        raise FileNotFoundError(f"{split_dir}: no images ({', '.join(layouts.IMAGE_SUFFIXES)}); "
                                f"expected {layouts.IMAGENET_LAYOUT}")
    return [split_dir / relative for relative in sorted(relative_paths)]


def image_list_digest(root: str | os.PathLike, split: str = "train") -> str:
    """A cheap content digest of a split: every image's relative path and size, in list order (one ``stat`` per
    file, no image bytes read). A replaced, added or removed image changes it; so does re-encoding one."""
    split_dir = layouts.imagenet_split_dir(root, split)
    digest = hashlib.sha256()
    for path in list_imagenet_images(root, split):
        digest.update(f"{path.relative_to(split_dir).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def pretraining_images(imagenet_root: str, pretrain_data: dict, threads: int, log, augmentation=None):
    """The pretraining set's image source (ImageNet layout, labels unused); index order is the list order, so
    pseudo-labels computed over it line up with the training samples. ``augmentation``: the model's pipeline
    (``AugmentationConfig``; None for the source's default crop and flip)."""
    from .sources import build_image_source

    paths = list_imagenet_images(imagenet_root, "train")
    log(f"{len(paths)} pretraining images under {imagenet_root}")
    return build_image_source(paths, preload=pretrain_data["preload"], resize_shorter=pretrain_data["resize_shorter"],
                              crop_size=pretrain_data["image_size"], crop_padding=pretrain_data["crop_padding"],
                              threads=threads, augmentation=augmentation,
                              skip_corrupt_images=pretrain_data.get("skip_corrupt_images", False), log=log)
def list_imagenet_labelled(root: str | os.PathLike, split: str,
                           classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Images of ``<root>/<split>/<wnid>/`` with their class indices, for the ImageNet linear track.

    ``classes`` (the wnids, whose order gives the indices) defaults to the sorted class folders of ``split``;
    pass the training split's to the validation split (the common reorganised ``val/<wnid>/`` layout), whose
    folders must then all be training classes. Returns (paths sorted by relative path, labels, classes).
    """
    paths = list_imagenet_images(root, split)
    split_dir = layouts.imagenet_split_dir(root, split)
    loose = [path for path in paths if path.parent == split_dir]
    if loose:
        raise FileNotFoundError(f"{split_dir}: {len(loose)} images lie outside class folders (e.g. {loose[0].name}); "
                                f"the ImageNet linear track needs {split}/<wnid>/*.JPEG (reorganise the val images "
                                "into one folder per class)")
    folders = [path.parent.name for path in paths]
    classes = sorted(set(folders)) if classes is None else list(classes)
    index = {wnid: position for position, wnid in enumerate(classes)}
    unknown = sorted(set(folders) - set(index))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown[:5]} are not among the {len(classes)} training "
                         "classes; the train and val folders must name the same wnids")
    return paths, [index[folder] for folder in folders], classes
