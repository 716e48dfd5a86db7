"""Path conventions and cheap checks of the real on-disk layouts of ImageNet, VOC2007 and Places205.

Imported by the Snakefile at DAG-build time, so this module is pure Python (no torch, no numpy) and its checks
only read directory listings and the first lines of list files, never the images.

Layouts (the ones the official archives unpack to):

- ImageNet: ``<root>/train/<wnid>/<wnid>_<n>.JPEG`` (and optionally ``val/``, flat or in wnid folders).
- VOC2007: ``<root>`` is the ``VOCdevkit`` folder holding ``VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
  ImageSets/Main/{trainval,test}.txt, ImageSets/Main/<class>_{trainval,test}.txt}``.
- Places205: ``<root>/images256/<letter>/<category>[/<subcategory>]/<file>.jpg`` and the list files
  ``<root>/trainvalsplit_places205/{train,val}_places205.csv`` with lines ``<path under images256> <label>``.
  The official tarball nests the images as ``<root>/data/vision/torralba/deeplearning/images256``; both are
  accepted, see :func:`places205_images_dir`.
"""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
VOC07_SPLITS = ("trainval", "test")
PLACES205_SPLITS = ("train", "val")
PLACES205_NESTED_IMAGES = Path("data", "vision", "torralba", "deeplearning", "images256")

IMAGENET_LAYOUT = "<root>/train/<wnid>/<wnid>_<n>.JPEG"
VOC07_LAYOUT = ("<root = VOCdevkit>/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml, "
                "ImageSets/Main/{trainval,test}.txt, ImageSets/Main/<class>_{trainval,test}.txt}")
PLACES205_LAYOUT = ("<root>/images256/<letter>/<category>/<file>.jpg (or <root>/data/vision/torralba/deeplearning/"
                    "images256/...) and <root>/trainvalsplit_places205/{train,val}_places205.csv")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


# ------------------------------------------------------------------------------------------------ ImageNet
def imagenet_split_dir(root: str | os.PathLike, split: str = "train") -> Path:
    return Path(root) / split


def imagenet_train_dir(root: str | os.PathLike) -> Path:
    return imagenet_split_dir(root, "train")


def check_imagenet_root(root: str | os.PathLike, split: str = "train") -> list[str]:
    """Check ``<root>/<split>/<wnid>/`` folders exist and the first holds images; return the wnids (sorted).
    The ImageNet linear track also checks ``val`` (the common reorganised layout, one folder per class)."""
    root = Path(root)
    _require_dir(root, "ImageNet root", IMAGENET_LAYOUT)
    train_dir = imagenet_split_dir(root, split)
    _require_dir(train_dir, "ImageNet training folder" if split == "train" else f"ImageNet {split} folder",
                 IMAGENET_LAYOUT)
    entries = list(os.scandir(train_dir))
    wnids = sorted(entry.name for entry in entries if entry.is_dir())
    if not wnids:
        loose = sum(1 for entry in entries if is_image_file(entry.name))
        hint = f" (found {loose} images directly in it: move them into one folder per class)" if loose else ""
        raise FileNotFoundError(f"{train_dir}: no class folders{hint}; expected {IMAGENET_LAYOUT}")
    first_class = train_dir / wnids[0]
    if not any(is_image_file(entry.name) for entry in os.scandir(first_class)):
        raise FileNotFoundError(f"{first_class}: no images ({', '.join(IMAGE_SUFFIXES)}); expected {IMAGENET_LAYOUT}")
    return wnids


# ------------------------------------------------------------------------------------------------ VOC2007
def voc07_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "VOC2007"


def voc07_image_path(root: str | os.PathLike, image_id: str) -> Path:
    return voc07_dir(root) / "JPEGImages" / f"{image_id}.jpg"


def voc07_annotation_path(root: str | os.PathLike, image_id: str) -> Path:
    return voc07_dir(root) / "Annotations" / f"{image_id}.xml"


def voc07_image_sets_dir(root: str | os.PathLike) -> Path:
    return voc07_dir(root) / "ImageSets" / "Main"


def voc07_split_list_file(root: str | os.PathLike, split: str) -> Path:
    """``ImageSets/Main/<split>.txt``: one image id per line."""
    return voc07_image_sets_dir(root) / f"{split}.txt"


def voc07_class_list_file(root: str | os.PathLike, class_name: str, split: str) -> Path:
    """``ImageSets/Main/<class>_<split>.txt``: lines ``<id> <1|-1|0>``."""
    return voc07_image_sets_dir(root) / f"{class_name}_{split}.txt"


def voc07_classes_on_disk(root: str | os.PathLike, split: str = "trainval") -> list[str]:
    """Class names that have an ``ImageSets/Main/<class>_<split>.txt`` file, sorted (VOC's own class order)."""
    suffix = f"_{split}.txt"
    return sorted(entry.name[: -len(suffix)] for entry in os.scandir(voc07_image_sets_dir(root))
                  if entry.name.endswith(suffix) and len(entry.name) > len(suffix))


def check_voc07_root(root: str | os.PathLike, classes: list[str] | None = None) -> list[str]:
    """Check the VOCdevkit layout and that ``classes`` (when given) matches the class files of both splits.

    Returns the class list in use: ``classes``, or the classes found on disk when it is None or empty.
    """
    root = Path(root)
    _require_dir(root, "VOC07 root (the VOCdevkit folder)", VOC07_LAYOUT)
    if not voc07_dir(root).is_dir() and (root / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{root}: this looks like the VOC2007 folder itself; give its parent (VOCdevkit) "
                                f"as the VOC07 root; expected {VOC07_LAYOUT}")
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        _require_dir(voc07_dir(root) / folder, "VOC07 folder", VOC07_LAYOUT)
    for split in VOC07_SPLITS:
        _require_file(voc07_split_list_file(root, split), f"VOC07 {split} image list", VOC07_LAYOUT)
    on_disk = {split: voc07_classes_on_disk(root, split) for split in VOC07_SPLITS}
    if not on_disk["trainval"]:
        raise FileNotFoundError(f"{voc07_image_sets_dir(root)}: no <class>_trainval.txt files; expected {VOC07_LAYOUT}")
    expected = list(classes) if classes else on_disk["trainval"]
    for split, found in on_disk.items():
        _check_class_match(expected, found, voc07_image_sets_dir(root), split, given=bool(classes))
    _check_first_voc07_image(root)
    return expected


def _check_class_match(expected: list[str], found: list[str], folder: Path, split: str, given: bool) -> None:
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if not missing and not extra:
        return
    source = "config key 'data.voc07_classes'" if given else "the <class>_trainval.txt files"
    parts = []
    if missing:
        parts.append(f"missing class files for {missing} (listed by {source})")
    if extra:
        parts.append(f"class files for {extra} that {source} does not list")
    raise ValueError(f"{folder}: the <class>_{split}.txt files do not match the class list: {'; '.join(parts)}")


def _check_first_voc07_image(root: Path) -> None:
    """The first trainval id must have its JPEG and annotation: catches lists from another VOC release."""
    list_file = voc07_split_list_file(root, "trainval")
    first_id = _first_line(list_file).split()
    if not first_id:
        raise ValueError(f"{list_file}: empty; expected one image id per line")
    for path in (voc07_image_path(root, first_id[0]), voc07_annotation_path(root, first_id[0])):
        _require_file(path, f"VOC07 file of image {first_id[0]} (first line of {list_file.name})", VOC07_LAYOUT)


# ------------------------------------------------------------------------------------------------ Places205
def places205_images_dir(root: str | os.PathLike) -> Path:
    """``<root>/images256``, or the official tarball's ``<root>/data/vision/torralba/deeplearning/images256``
    when only that exists. The relative paths in the list files are relative to this folder."""
    root = Path(root)
    flat, nested = root / "images256", root / PLACES205_NESTED_IMAGES
    return nested if nested.is_dir() and not flat.is_dir() else flat


def places205_list_file(root: str | os.PathLike, split: str) -> Path:
    if split not in PLACES205_SPLITS:
        raise ValueError(f"Places205 split {split!r}: expected one of {PLACES205_SPLITS}")
    return Path(root) / "trainvalsplit_places205" / f"{split}_places205.csv"


def check_places205_root(root: str | os.PathLike) -> None:
    """Check the images folder and both list files; the first listed image of each split must exist."""
    root = Path(root)
    _require_dir(root, "Places205 root", PLACES205_LAYOUT)
    images_dir = places205_images_dir(root)
    _require_dir(images_dir, "Places205 images folder", PLACES205_LAYOUT)
    for split in PLACES205_SPLITS:
        list_file = places205_list_file(root, split)
        _require_file(list_file, f"Places205 {split} list", PLACES205_LAYOUT)
        fields = _first_line(list_file).split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}: first line {' '.join(fields)!r} is not '<path under images256> <label>'")
        _require_file(images_dir / fields[0], f"first image of {list_file.name}", PLACES205_LAYOUT)


# ------------------------------------------------------------------------------------------------ helpers
def _require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}; expected the layout {layout}")


def _require_file(path: Path, what: str, layout: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; expected the layout {layout}")


def _first_line(path: Path) -> str:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    return ""
