"""Tiny trees in the EXACT real layouts of ImageNet, VOC2007 and Places205, with tiny real JPEGs.

Used by the data unit tests and by the workflow tests that dry-run the full-scale configuration, so the
signatures below are stable. Every helper is deterministic and returns what it wrote, so tests can compare the
loaders' output with the truth. Images are small RGB JPEGs of different, non-square sizes (so resizing paths are
exercised) and distinct contents.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_challenge.data.voc07 import image_labels_from_objects

PLACES_CATEGORIES = ["a/abbey", "a/apartment_building/outdoor", "b/bedroom", "k/kitchen", "s/ski_slope"]


def write_tiny_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    """A smooth coloured gradient (JPEG keeps it nearly exact) that differs by ``seed``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=3)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([base[0] + x * 50 // width, base[1] + y * 50 // height, np.full_like(x, base[2])], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path, quality=95)


def make_tiny_imagenet(root: str | Path, n_classes: int = 2, per_class: int = 3, with_val: bool = False) -> list[Path]:
    """``<root>/train/<wnid>/<wnid>_<n>.JPEG`` (wnids n01000000, n01000001, ...); ``with_val`` adds the same
    under ``val/``. Returns the training image paths, sorted."""
    root = Path(root)
    paths = []
    for split in ("train", "val") if with_val else ("train",):
        for class_index in range(n_classes):
            wnid = f"n{1000000 + class_index:08d}"
            for number in range(per_class):
                path = root / split / wnid / f"{wnid}_{number + 1}.JPEG"
                write_tiny_jpeg(path, 20 + 2 * number, 14 + class_index, seed=class_index * 100 + number)
                if split == "train":
                    paths.append(path)
    return sorted(paths)


def tiny_voc_objects(image_index: int, classes: list[str]) -> list[dict]:
    """Image ``j``: a non-difficult object of class ``j mod C``; even images also hold a difficult object of
    class ``(j + 1) mod C``, so with C >= 2 and 2+ images per split every split has 1, -1 and 0 labels."""
    objects = [{"name": classes[image_index % len(classes)], "bbox": (2, 3, 12, 10), "difficult": False,
                "truncated": False}]
    if image_index % 2 == 0:
        objects.append({"name": classes[(image_index + 1) % len(classes)], "bbox": (1, 1, 5, 4), "difficult": True,
                        "truncated": True})
    return objects


def write_voc_annotation(path: Path, image_id: str, width: int, height: int, objects: list[dict]) -> None:
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{image_id}.jpg</filename>\n"
             f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
             "\t<segmented>0</segmented>\n"]
    for item in objects:
        xmin, ymin, xmax, ymax = item["bbox"]
        parts.append(f"\t<object>\n\t\t<name>{item['name']}</name>\n\t\t<pose>Unspecified</pose>\n"
                     f"\t\t<truncated>{int(item['truncated'])}</truncated>\n"
                     f"\t\t<difficult>{int(item['difficult'])}</difficult>\n"
                     f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
                     f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n")
    parts.append("</annotation>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))


def make_tiny_voc07(root: str | Path, classes: list[str], n_trainval: int, n_test: int) -> dict:
    """A VOCdevkit at ``root``: ``VOC2007/{JPEGImages, Annotations, ImageSets/Main}`` with ``{trainval,test}.txt``
    and ``<class>_{trainval,test}.txt`` in VOC's own formatting, labels by VOC07's rule from the objects of
    :func:`tiny_voc_objects`. Ids are 6-digit, trainval first. Returns ``{split: {"ids": [...],
    "labels": int8 [N, C], "objects": {id: [...]}}}``."""
    root = Path(root)
    voc = root / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    truth, next_id = {}, 1
    for split, count in (("trainval", n_trainval), ("test", n_test)):
        ids, objects_by_id, label_rows = [], {}, []
        for _ in range(count):
            image_id = f"{next_id:06d}"
            objects = tiny_voc_objects(next_id - 1, classes)
            write_tiny_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", 24, 18, seed=next_id)
            write_voc_annotation(voc / "Annotations" / f"{image_id}.xml", image_id, 24, 18, objects)
            ids.append(image_id)
            objects_by_id[image_id] = objects
            label_rows.append(image_labels_from_objects(objects, classes))
            next_id += 1
        labels = np.stack(label_rows) if label_rows else np.zeros((0, len(classes)), dtype=np.int8)
        (main / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))
        for column, class_name in enumerate(classes):
            (main / f"{class_name}_{split}.txt").write_text(
                "".join(f"{image_id} {int(label):2d}\n" for image_id, label in zip(ids, labels[:, column])))
        truth[split] = {"ids": ids, "labels": labels, "objects": objects_by_id}
    return truth


def make_tiny_places205(root: str | Path, n_classes: int = 3, per_class_train: int = 2, per_class_val: int = 1,
                        nested: bool = False) -> dict:
    """``<root>/images256/<letter>/<category>/<file>.jpg`` (or, with ``nested``, the official tarball's
    ``<root>/data/vision/torralba/deeplearning/images256``) and ``trainvalsplit_places205/{train,val}_places205.csv``
    with lines ``<path under images256> <label>``. One category is two levels deep, as in the real
    ``a/apartment_building/outdoor``. Returns ``{split: (relative_paths, labels list)}``."""
    if not 1 <= n_classes <= len(PLACES_CATEGORIES):
        raise ValueError(f"n_classes must be in 1..{len(PLACES_CATEGORIES)}")
    root = Path(root)
    images_dir = root / ("data/vision/torralba/deeplearning/images256" if nested else "images256")
    lists = root / "trainvalsplit_places205"
    lists.mkdir(parents=True, exist_ok=True)
    truth, number = {}, 0
    for split, per_class in (("train", per_class_train), ("val", per_class_val)):
        relative_paths, labels = [], []
        for label in range(n_classes):
            for _ in range(per_class):
                category = PLACES_CATEGORIES[label]
                relative = f"{category}/gsun_{number:032x}.jpg"
                write_tiny_jpeg(images_dir / relative, 16 + label, 16, seed=1000 + number)
                relative_paths.append(relative)
                labels.append(label)
                number += 1
        (lists / f"{split}_places205.csv").write_text(
            "".join(f"{path} {label}\n" for path, label in zip(relative_paths, labels)))
        truth[split] = (relative_paths, labels)
    return truth


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """An IDX file (uint8 only) written by hand, gzipped when ``compress``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    Path(path).write_bytes(gzip.compress(payload) if compress else payload)


def make_tiny_fashion_mnist(folder: str | Path, n_train: int = 200, n_test: int = 60) -> dict:
    """The four Fashion-MNIST IDX files with ``n_train`` / ``n_test`` synthetic 28 px items (a bright rectangle
    whose size and grey level depend on the item, classes cycling 0..9). Returns ``{split: (images, labels)}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, count, start in (("train", n_train, 0), ("t10k", n_test, n_train)):
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) + start) % 10
        for index in range(count):
            number = start + index
            height, width = 8 + number % 17, 6 + (number * 7) % 19
            top, left = (28 - height) // 2, (28 - width) // 2
            images[index, top : top + height, left : left + width] = 60 + (number * 37) % 190
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
        truth[split] = (images, labels)
    return truth
