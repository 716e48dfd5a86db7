"""Path conventions and cheap checks of the real on-disk layouts of ImageNet, VOC2007 and Places205.

Imported by the Snakefile at DAG-build time, so this module is pure Python (no torch, no numpy) and its checks
only read directory listings and list files (every line's syntax), never the images.

It owns the list-file formats (one parser per format, used by the checks and by the readers) and the containment
rule: a path read from a list or a listing must stay inside its data root (no absolute paths, no ``..``, no
symbolic link that leads out), see :class:`RootContainment`.

Layouts (the ones the official archives unpack to):

- ImageNet: ``<root>/train/<wnid>/<wnid>_<n>.JPEG`` (and optionally ``val/``, flat or in wnid folders).
- VOC2007: ``<root>`` is the ``VOCdevkit`` folder holding ``VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml,
  ImageSets/Main/{trainval,test}.txt, ImageSets/Main/<class>_{trainval,test}.txt}``.
- Fashion-MNIST (the embedded data set's source): the four IDX files of :data:`FASHION_MNIST_FILES` in one folder.
- Places205: ``<root>/images256/<letter>/<category>[/<subcategory>]/<file>.jpg`` and the list files
  ``<root>/trainvalsplit_places205/{train,val}_places205.csv`` with lines ``<path under images256> <label>``.
  The official tarball nests the images as ``<root>/data/vision/torralba/deeplearning/images256``; both are
  accepted, see :func:`places205_images_dir`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

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
    containment = RootContainment(root)
    for entry in entries:
        if entry.is_symlink():  # a class folder linked from elsewhere; d_type from the listing, no stat
            containment.check_resolved(entry.path, f"ImageNet listing of {train_dir}")
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
        _read_every_line(voc07_image_set_lines(voc07_split_list_file(root, split)))
        for class_name in expected:
            _read_every_line(voc07_class_label_lines(voc07_class_list_file(root, class_name, split)))
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
    first = next(voc07_image_set_lines(list_file), None)
    if first is None:
        raise ValueError(f"{list_file}: empty; expected one image id per line")
    line_number, first_id = first
    for path in (voc07_image_path(root, first_id), voc07_annotation_path(root, first_id)):
        _require_file(path, f"VOC07 file of image {first_id} ({list_file.name}:{line_number})", VOC07_LAYOUT)


def voc07_image_set_lines(list_file: Path) -> Iterator[tuple[int, str]]:
    """(line number, image id) of each non-blank line of ``ImageSets/Main/<split>.txt`` (lines ``<id>``).

    A malformed line, or an id that is absolute or climbs with ``..``, is an error naming ``file:line``."""
    for line_number, fields in _nonblank_lines(list_file):
        if len(fields) != 1:
            raise ValueError(f"{list_file}:{line_number}: {' '.join(fields)!r} is not '<image id>'")
        check_listed_path(fields[0], f"{list_file}:{line_number}")
        yield line_number, fields[0]


def voc07_class_label_lines(list_file: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, image id, label in {1, -1, 0}) of each non-blank line of ``<class>_<split>.txt``."""
    for line_number, fields in _nonblank_lines(list_file):
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            raise ValueError(f"{list_file}:{line_number}: {' '.join(fields)!r} is not '<image id> <1|-1|0>'")
        check_listed_path(fields[0], f"{list_file}:{line_number}")
        yield line_number, fields[0], int(fields[1])


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
    """Check the images folder and both list files: every line's syntax (about 2 s of CPU for the 2.45M
    training lines; no listed file is stat-ed), and the first listed image of each split must exist."""
    root = Path(root)
    _require_dir(root, "Places205 root", PLACES205_LAYOUT)
    images_dir = places205_images_dir(root)
    _require_dir(images_dir, "Places205 images folder", PLACES205_LAYOUT)
    for split in PLACES205_SPLITS:
        list_file = places205_list_file(root, split)
        _require_file(list_file, f"Places205 {split} list", PLACES205_LAYOUT)
        first = None
        for line in places205_list_lines(list_file):
            first = first or line
        if first is None:
            raise ValueError(f"{list_file}: no images listed; expected lines '<path under images256> <label>'")
        line_number, relative, _ = first
        _require_file(images_dir / relative, f"first image of {list_file.name} (line {line_number})",
                      PLACES205_LAYOUT)


def places205_list_lines(list_file: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, path under the images folder, label >= 0) of each non-blank line of a Places205 list.

    Despite the ``.csv`` suffix the official lists are space separated: ``a/abbey/gsun_....jpg 0``. A malformed
    line, or a path that is absolute or climbs with ``..``, is an error naming ``file:line``."""
    for line_number, fields in _nonblank_lines(list_file):
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{list_file}:{line_number}: {' '.join(fields)!r} is not "
                             "'<path under images256> <label >= 0>'")
        if fields[0].startswith("/") or ".." in fields[0]:  # the full check only where it can fail (2.45M lines)
            check_listed_path(fields[0], f"{list_file}:{line_number}")
        yield line_number, fields[0], int(fields[1])


# ------------------------------------------------------------------------------------------------ containment
class PathOutsideRootError(ValueError):
    """A listed path that is absolute, has a ``..`` component, or leads out of its data root through a link."""


def check_listed_path(relative: str, where: str) -> None:
    """The syntax half of the containment rule (no file-system access): ``relative`` is a relative path without
    ``..`` components. ``where`` (the list file and line) starts the error message."""
    if relative.startswith("/"):
        raise PathOutsideRootError(f"{where}: {relative!r} is an absolute path; list files hold paths relative to "
                                   "the data root, which must contain every listed file: fix or remove the line")
    if ".." in relative and ".." in relative.split("/"):
        raise PathOutsideRootError(f"{where}: {relative!r} has a '..' component, so it can leave the data root; "
                                   "list files hold plain paths under the root: fix or remove the line")


class RootContainment:
    """Listed paths under ``root`` whose real location (symbolic links followed) must lie inside ``root``.

    A link that stays inside the root is fine; so is a root that is itself a link. Folders are resolved once
    and cached, so a list of millions of files costs one ``lstat`` per file (measured: 0.4 s of CPU per 100k
    lines, against 0.07 s for parsing alone; file-system latency comes on top).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.real_root = os.path.realpath(root)
        self._root_text = os.fspath(root)
        self._folder_inside: dict[str, bool] = {}

    def check_listed(self, relative: str, where: str, syntax_checked: bool = False) -> None:
        """``root/relative`` is refused (:class:`PathOutsideRootError` starting with ``where``) when ``relative``
        is absolute, climbs with ``..`` or leads out through a link; ``syntax_checked``: the list's parser has
        already applied :func:`check_listed_path`. A missing file is left to its reader."""
        if not syntax_checked:
            check_listed_path(relative, where)
        self.check_path(f"{self._root_text}{os.sep}{relative}", where)

    def check_path(self, path: str | os.PathLike, where: str) -> None:
        """``path``, built under the root by a path function, must not lead out of it through a link."""
        path = os.fspath(path)
        folder = path.rpartition(os.sep)[0]
        folder_inside = self._folder_inside.get(folder)
        if folder_inside is None:
            folder_inside = self._folder_inside[folder] = self.is_inside(os.path.realpath(folder))
        if os.path.islink(path):
            self.check_resolved(path, where)
        elif not folder_inside:
            self._refuse(path, where)

    def check_resolved(self, path: str | os.PathLike, where: str) -> None:
        """``path`` (under the root) must resolve inside the root; for entries a listing reports as links."""
        real = os.path.realpath(path)
        if not self.is_inside(real):
            self._refuse(os.fspath(path), where)

    def is_inside(self, real_path: str) -> bool:
        return real_path == self.real_root or real_path.startswith(self.real_root.rstrip(os.sep) + os.sep)

    def _refuse(self, path: str, where: str) -> None:
        link = self._first_link_leaving(path)
        target = os.path.realpath(link)
        raise PathOutsideRootError(f"{where}: {path} leads out of the data root {self.real_root}: the symbolic link "
                                   f"{link} points to {target}; move or copy the files into the root (or make "
                                   "the link point inside it)")

    def _first_link_leaving(self, path: str) -> str:
        """The outermost link on ``path`` below the root whose target is outside it (the error names it)."""
        relative_parts = Path(os.path.relpath(path, self.root)).parts
        current = str(self.root)
        for part in relative_parts:
            current = os.path.join(current, part)
            if os.path.islink(current) and not self.is_inside(os.path.realpath(current)):
                return current
        return path


# ------------------------------------------------------------------------------------------- Fashion-MNIST
EMBEDDED_ROOTS = {"imagenet": "imagenet", "voc07": "VOCdevkit", "places205": "places205"}  # under its folder
FASHION_MNIST_FILES = {  # the source of the embedded data set (data/embedded.py), Debian's file names
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def missing_fashion_mnist_files(folder: str | os.PathLike) -> list[str]:
    """The names of :data:`FASHION_MNIST_FILES` that are not files in ``folder``."""
    return [name for pair in FASHION_MNIST_FILES.values() for name in pair if not Path(folder, name).is_file()]


# ------------------------------------------------------------------------------------------------ helpers
def _require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}; expected the layout {layout}")


def _require_file(path: Path, what: str, layout: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; expected the layout {layout}")


def _read_every_line(lines: Iterator) -> None:
    """Run a list parser to the end, so that a malformed line anywhere raises (syntax only, no stat)."""
    for _ in lines:
        pass


def _nonblank_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line, streamed (2.45M-line lists)."""
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if fields:
                yield line_number, fields
