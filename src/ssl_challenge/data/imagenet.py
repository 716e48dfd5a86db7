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


def pretraining_images(imagenet_root: str, pretrain_data: dict, threads: int, log):
    """The pretraining set's image source (ImageNet layout, labels unused); index order is the list order, so
    pseudo-labels computed over it line up with the training samples."""
    from .images import build_image_source

    paths = list_imagenet_images(imagenet_root, "train")
    log(f"{len(paths)} pretraining images under {imagenet_root}")
    return build_image_source(paths, preload=pretrain_data["preload"], resize_shorter=pretrain_data["resize_shorter"],
                              crop_size=pretrain_data["image_size"], crop_padding=pretrain_data["crop_padding"],
                              threads=threads, skip_corrupt_images=pretrain_data.get("skip_corrupt_images", False),
                              log=log)
