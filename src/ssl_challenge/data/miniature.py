"""A miniature of the full-scale data sets for `make fullscale_check`: Fashion-MNIST items on 256 px colour canvases,
in the real layouts of ImageNet (train/ and val/), VOC2007 (the 20 real class names) and Places205.

config/challenge.yaml reads it unchanged (only its roots and size keys are overridden, by
config/fullscale_check.yaml), so every loader, crop and resize of the full-scale run sees real-sized JPEGs. Torch-free
(numpy and PIL), like :mod:`.embedded`, whose item pasting, annotation and list writers it reuses.

Choices worth knowing:

- Items are tinted with a random colour per image (Fashion-MNIST is grayscale), so that colour jitter, grayscale
  and DC's Sobel layer have colour to act on. ImageNet images are 256 px high and 256-320 px wide.
- VOC07's 20 classes come from the 10 Fashion-MNIST classes, two VOC names per item class (``VOC07_CLASSES[2 l]``
  and ``[2 l + 1]`` for label ``l``). Image ``j`` of the tree holds a large, fully visible object of class
  ``j mod 20`` and, every other image, a second object at a random place and size (often truncated or difficult),
  so that ``n`` trainval images give every class at least ``n // 20`` positives: the SVM's 3-fold CV needs 3.
- Places205 categories are the 10 Fashion-MNIST classes (``<letter>/<class>``), one item per 256 px canvas.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.io import write_json_atomic, write_text_atomic
from . import layouts
from .embedded import (
    FASHION_MNIST_CLASSES,
    annotation_xml,
    load_fashion_mnist,
    paste_item,
    synthetic_wnid,
    write_voc07_image_sets,
)
from .voc07 import image_labels_from_objects

VOC07_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                 "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                 "tvmonitor"]
IMAGE_SIDE = 256  # the shorter side of every image: the full-scale pipelines resize to 256 and crop 224
MIN_OBJECT_FRACTION, MAX_OBJECT_FRACTION = 0.4, 0.7  # the first VOC object and ImageNet/Places items, of the side
SECOND_OBJECT_FRACTIONS = (0.1, 0.5)
MIN_VISIBLE_FRACTION = 0.5
MIN_OBJECT_SIDE = 12
JPEG_QUALITY = 90
DEFAULT_SIZES = {"imagenet_train": 96, "imagenet_val": 40, "voc_trainval": 80, "voc_test": 40,
                 "places_train": 40, "places_val": 20}


class ItemPool:
    """Unused Fashion-MNIST items by label, drawn without replacement (each item appears once in the tree)."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator):
        order = rng.permutation(len(labels))
        self.by_label = {label: list(order[labels[order] == label]) for label in range(len(FASHION_MNIST_CLASSES))}

    def take(self, label: int) -> int:
        if not self.by_label[label]:
            raise ValueError(f"no Fashion-MNIST item of class {FASHION_MNIST_CLASSES[label]!r} left for the miniature")
        return int(self.by_label[label].pop())


def tinted(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grayscale canvas ``[H, W]`` as RGB ``[H, W, 3]`` scaled by a random colour (each channel 0.3..1)."""
    tint = rng.uniform(0.3, 1.0, size=3)
    return np.clip(canvas[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)


def save_rgb(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="RGB").save(path, quality=JPEG_QUALITY)


def single_item_canvas(item: np.ndarray, rng: np.random.Generator, width: int = IMAGE_SIDE) -> np.ndarray:
    """One item, fully visible, on an ``IMAGE_SIDE`` x ``width`` black canvas (grayscale)."""
    square = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    side = int(rng.integers(round(IMAGE_SIDE * MIN_OBJECT_FRACTION), round(IMAGE_SIDE * MAX_OBJECT_FRACTION) + 1))
    top, left = (int(value) for value in rng.integers(0, IMAGE_SIDE - side + 1, size=2))
    paste_item(square, item, side, top, left)
    canvas = np.zeros((IMAGE_SIDE, width), dtype=np.uint8)
    offset = int(rng.integers(0, width - IMAGE_SIDE + 1))
    canvas[:, offset : offset + IMAGE_SIDE] = square
    return canvas


def write_imagenet(images, labels, pool: ItemPool, root: Path, counts: dict, rng: np.random.Generator) -> dict:
    """``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/<wnid>_<n>.JPEG``, classes cycling over the 10 wnids."""
    written = {}
    for split in ("train", "val"):
        total = counts[f"imagenet_{split}"]
        for number in range(total):
            label = number % len(FASHION_MNIST_CLASSES)
            wnid = synthetic_wnid(label)
            width = int(rng.integers(IMAGE_SIDE, IMAGE_SIDE + 65))
            canvas = single_item_canvas(images[pool.take(label)], rng, width)
            save_rgb(tinted(canvas, rng), layouts.imagenet_split_dir(root, split) / wnid / f"{wnid}_{number}.JPEG")
        written[split] = total
    return written


def voc_objects(images, pool: ItemPool, image_number: int, canvas: np.ndarray, rng: np.random.Generator) -> list:
    """Paste the objects of VOC image ``image_number`` (see the module docstring) and return their annotations."""
    objects = []
    class_indices = [image_number % len(VOC07_CLASSES)]
    if image_number % 2:
        class_indices.append(int(rng.integers(len(VOC07_CLASSES))))
    for position, class_index in enumerate(class_indices):
        item = images[pool.take(class_index // 2)]
        if position == 0:  # large and inside the canvas: never difficult
            side = int(rng.integers(round(IMAGE_SIDE * MIN_OBJECT_FRACTION), round(IMAGE_SIDE * MAX_OBJECT_FRACTION)))
            top, left = (int(value) for value in rng.integers(0, IMAGE_SIDE - side + 1, size=2))
        else:  # anywhere, centre inside the canvas: may be truncated, tiny or hidden
            low, high = (round(IMAGE_SIDE * fraction) for fraction in SECOND_OBJECT_FRACTIONS)
            side = int(rng.integers(low, high + 1))
            top, left = (int(value) for value in rng.integers(-(side // 2), IMAGE_SIDE - side // 2 + 1, size=2))
        placed = paste_item(canvas, item, side, top, left)
        if placed is None:
            continue
        xmin, ymin, xmax, ymax = placed["bbox"]
        tiny = max(xmax - xmin + 1, ymax - ymin + 1) < MIN_OBJECT_SIDE
        objects.append({"name": VOC07_CLASSES[class_index], "bbox": placed["bbox"],
                        "difficult": placed["visible_fraction"] < MIN_VISIBLE_FRACTION or tiny,
                        "truncated": placed["visible_fraction"] < 1.0})
    return objects


def write_voc07(images, pool: ItemPool, root: Path, counts: dict, rng: np.random.Generator) -> dict:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (layouts.voc07_dir(root) / folder).mkdir(parents=True, exist_ok=True)
    summary, image_number = {}, 0
    for split in layouts.VOC07_SPLITS:
        ids, rows = [], []
        for _ in range(counts[f"voc_{split}"]):
            image_id = f"{image_number + 1:06d}"
            canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
            objects = voc_objects(images, pool, image_number, canvas, rng)
            image_number += 1
            save_rgb(tinted(canvas, rng), layouts.voc07_image_path(root, image_id))
            tree = annotation_xml(image_id, IMAGE_SIDE, objects)
            tree.find("size/depth").text = "3"
            tree.write(layouts.voc07_annotation_path(root, image_id))
            ids.append(image_id)
            rows.append(image_labels_from_objects(objects, VOC07_CLASSES))
        matrix = np.stack(rows)
        write_voc07_image_sets(root, split, ids, matrix, VOC07_CLASSES)
        summary[split] = {"images": len(ids), "positives_per_class": dict(zip(VOC07_CLASSES,
                                                                              (matrix == 1).sum(0).tolist()))}
    return summary


def write_places205(images, pool: ItemPool, root: Path, counts: dict, rng: np.random.Generator) -> dict:
    written, number = {}, 0
    for split in layouts.PLACES205_SPLITS:
        lines = []
        for index in range(counts[f"places_{split}"]):
            label = index % len(FASHION_MNIST_CLASSES)
            name = FASHION_MNIST_CLASSES[label]
            relative = f"{name[0]}/{name}/{name}_{number:06d}.jpg"
            number += 1
            canvas = single_item_canvas(images[pool.take(label)], rng)
            save_rgb(tinted(canvas, rng), root / "images256" / relative)
            lines.append(f"{relative} {label}\n")
        layouts.places205_list_file(root, split).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(layouts.places205_list_file(root, split), "".join(lines))
        written[split] = len(lines)
    return written


def build_miniature(fashion_mnist_dir: str | Path, out_root: str | Path, sizes: dict | None = None,
                    seed: int = 0) -> dict:
    """Write ``imagenet/``, ``VOCdevkit/`` and ``places205/`` under ``out_root`` and ``manifest.json`` last (its
    presence means the tree is complete). ``sizes`` overrides :data:`DEFAULT_SIZES` (images per part)."""
    counts = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(counts) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"miniature sizes: unknown parts {sorted(unknown)}; expected {sorted(DEFAULT_SIZES)}")
    if counts["voc_trainval"] < 3 * len(VOC07_CLASSES) or counts["voc_test"] < len(VOC07_CLASSES):
        raise ValueError(f"miniature sizes: voc_trainval >= {3 * len(VOC07_CLASSES)} and voc_test >= "
                         f"{len(VOC07_CLASSES)} are needed for 3 trainval and 1 test positives per class")
    out_root = Path(out_root)
    for name in ("imagenet", "VOCdevkit", "places205"):
        tree = out_root / name
        if tree.is_dir() and any(tree.iterdir()):
            raise FileExistsError(f"{tree} already exists and is not empty; remove {out_root} to rebuild the "
                                  "miniature")
    images, labels, sources = load_fashion_mnist(fashion_mnist_dir)
    rng = np.random.default_rng(seed)
    pool = ItemPool(labels, rng)
    manifest = {
        "seed": seed,
        "image_side": IMAGE_SIDE,
        "counts": counts,
        "imagenet": write_imagenet(images, labels, pool, out_root / "imagenet", counts, rng),
        "voc07": write_voc07(images, pool, out_root / "VOCdevkit", counts, rng),
        "places205": write_places205(images, pool, out_root / "places205", counts, rng),
        "sources": {name: info for split in sources.values() for name, info in split["files"].items()},
    }
    write_json_atomic(out_root / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_root", help="folder to write imagenet/, VOCdevkit/, places205/ into")
    parser.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (Path(args.out_root) / "manifest.json").is_file():
        print(f"{args.out_root}: miniature already built (manifest.json present)")
        return
    manifest = build_miniature(args.fashion_mnist_dir, args.out_root, seed=args.seed)
    print(json.dumps(manifest["counts"]))


if __name__ == "__main__":
    main()
