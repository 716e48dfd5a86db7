"""The embedded default data set: Fashion-MNIST laid out as ImageNet, VOC2007 and Places205.

Built in the real on-disk layouts (see :mod:`.layouts`) so that the loaders of the full-scale data read it
unchanged. Every Fashion-MNIST item is used at most once: pretraining takes a seeded selection of the training
split; the evaluation sets are built from the held-out rest (the remaining training items plus t10k), with
disjoint items for VOC trainval, VOC test, Places train and Places val.

Choices worth knowing:

- Pretraining images are the 28 px items centred on a black 32 px canvas (padding, no interpolation), filed in
  one synthetic wnid folder per true class (n00000000 ... n00000009). Pretraining never reads the folder names;
  keeping the class there only makes an ImageNet-style linear probe possible on the embedded data.
- Backgrounds are black, as in Fashion-MNIST itself: pretraining and evaluation images then share statistics,
  and a noise background would only add a domain shift and JPEG bytes without testing anything of the methods.
- VOC mosaics: 1..max_items items pasted with max-blending (overlaps stay visible, like translucent layers) at
  random positions (centre inside the canvas, so up to half of an item may fall outside) and sizes. The box is
  the tight box of the visible foreground. An object is truncated when part of its foreground is outside the
  canvas, and difficult when less than half of its foreground is visible or its box's longer side is under
  12 px; an item with no visible foreground is not annotated. Image labels follow VOC07's rule exactly.
- Places images: one item, fully inside the canvas, at a random position and size; label = class index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.io import write_json_atomic, write_text_atomic
from . import layouts
from .layouts import FASHION_MNIST_FILES
from .idx import read_idx
from .voc07 import image_labels_from_objects

FASHION_MNIST_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankleboot"]
PRETRAIN_CANVAS = 32
JPEG_QUALITY = 95
FOREGROUND_THRESHOLD = 10  # grey level above which a pixel belongs to the item (the background is 0)
MIN_VISIBLE_FRACTION = 0.5
MIN_OBJECT_SIDE = 12
VOC_SIDE_FRACTIONS = (0.25, 0.6875)  # item side / canvas side: 16..44 px on a 64 px canvas
PLACES_SIDE_FRACTIONS = (0.375, 0.875)  # 24..56 px on a 64 px canvas
PROVENANCE_FILE = "provenance.json"


def embedded_voc_classes() -> list[str]:
    """The ten Fashion-MNIST classes with VOC-style names (lower case, no spaces), in label order."""
    return list(FASHION_MNIST_CLASSES)


def build_embedded_data(fashion_mnist_dir: str | os.PathLike, out_root: str | os.PathLike, *,
                        pretrain_images: int, voc_trainval: int, voc_test: int, places_train: int,
                        places_val: int, canvas_size: int = 64, seed: int = 0, max_items: int = 4) -> dict:
    """Write ``imagenet/``, ``VOCdevkit/``, ``places205/``, ``provenance.json`` and, last, ``manifest.json``
    (atomically, so its presence means the build completed) under ``out_root``; return the manifest.

    The output is a pure function of the inputs and ``seed``. ``provenance.json`` lists the Fashion-MNIST item
    ids used by every part (ids 0..59999 are the training split, 60000.. are t10k).
    """
    out_root = Path(out_root)
    _refuse_existing_trees(out_root)
    images, labels, sources = load_fashion_mnist(fashion_mnist_dir)
    # one independent stream per part: each part's images depend only on its own items and the seed
    streams = dict(zip(("allocation", "trainval", "test", "places"),
                       (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4))))
    allocation = allocate_items(
        sources["train"]["items"], streams["allocation"], n_items=len(images), pretrain_images=pretrain_images,
        voc_images={"trainval": voc_trainval, "test": voc_test},
        places_images={"train": places_train, "val": places_val}, max_items=max_items,
    )
    pretrain_counts = write_pretrain_images(images, labels, allocation["pretrain"], out_root / "imagenet")
    voc_summary = write_voc07(images, labels, allocation, out_root / "VOCdevkit", canvas_size,
                              {split: streams[split] for split in layouts.VOC07_SPLITS})
    places_counts = write_places205(images, labels, allocation, out_root / "places205", canvas_size,
                                    streams["places"])
    provenance = {key: (value.tolist() if isinstance(value, np.ndarray) else [v.tolist() for v in value])
                  for key, value in allocation.items()}
    write_text_atomic(out_root / PROVENANCE_FILE, json.dumps(provenance, separators=(",", ":")) + "\n")
    manifest = {
        "seed": seed,
        "canvas_size": canvas_size,
        "max_items": max_items,
        "pretrain_canvas": PRETRAIN_CANVAS,
        "classes": embedded_voc_classes(),
        "counts": {"pretrain_images": pretrain_images, "voc_trainval": voc_trainval, "voc_test": voc_test,
                   "places_train": places_train, "places_val": places_val},
        "pretrain_images_per_wnid": pretrain_counts,
        "voc07": voc_summary,
        "places205_images_per_class": places_counts,
        "roots": dict(layouts.EMBEDDED_ROOTS),
        "provenance": PROVENANCE_FILE,
        "source_items": {split: split_info["items"] for split, split_info in sources.items()},
        "sources": {name: file_info for split_info in sources.values()
                    for name, file_info in split_info["files"].items()},
    }
    write_json_atomic(out_root / "manifest.json", manifest)
    return manifest


def _refuse_existing_trees(out_root: Path) -> None:
    for name in ("imagenet", "VOCdevkit", "places205"):
        tree = out_root / name
        if tree.is_dir() and any(tree.iterdir()):
            raise FileExistsError(f"{tree} already exists and is not empty; remove it before building the embedded "
                                  "data set (old files would be mixed into the new lists)")


# ------------------------------------------------------------------------------------------------ sources
def load_fashion_mnist(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of train then t10k, and a description of the files."""
    folder = Path(folder)
    all_images, all_labels, sources = [], [], {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        paths = [folder / images_name, folder / labels_name]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"Fashion-MNIST file {path} does not exist; expected the four IDX files "
                                        f"{[name for pair in FASHION_MNIST_FILES.values() for name in pair]}")
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.shape != images.shape[:1] or images.dtype != np.uint8:
            raise ValueError(f"{paths[0]} / {paths[1]}: expected uint8 images [N, H, W] and N labels, got "
                             f"{images.dtype} {images.shape} and {labels.shape}")
        all_images.append(images)
        all_labels.append(labels.astype(np.int64))
        sources[split] = {"items": len(labels), "files": {path.name: _describe_file(path) for path in paths}}
    labels = np.concatenate(all_labels)
    if labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{folder}: labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return np.concatenate(all_images), labels, sources


def _describe_file(path: Path) -> dict:
    data = path.read_bytes()
    return {"path": str(path.resolve()), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def allocate_items(n_train: int, rng: np.random.Generator, *, n_items: int, pretrain_images: int,
                   voc_images: dict[str, int], places_images: dict[str, int], max_items: int) -> dict:
    """Disjoint Fashion-MNIST item ids per part: ``pretrain`` from the training split; ``voc_<split>`` (a list of
    id arrays, one per mosaic, 1..max_items long) and ``places_<split>`` from the held-out rest."""
    if pretrain_images > n_train:
        raise ValueError(f"config key 'data.embedded.pretrain_images' = {pretrain_images} exceeds the {n_train} "
                         "Fashion-MNIST training items")
    training_order = rng.permutation(n_train)
    held_out = np.concatenate([training_order[pretrain_images:], np.arange(n_train, n_items)])
    held_out = held_out[rng.permutation(len(held_out))]
    items_per_mosaic = {split: rng.integers(1, max_items + 1, size=count) for split, count in voc_images.items()}
    needed = sum(int(counts.sum()) for counts in items_per_mosaic.values()) + sum(places_images.values())
    if needed > len(held_out):
        raise ValueError(f"the evaluation sets need {needed} held-out items (VOC mosaics hold up to {max_items}) "
                         f"but only {len(held_out)} remain after {pretrain_images} pretraining images; reduce the "
                         "data.embedded sizes")
    allocation, cursor = {"pretrain": np.sort(training_order[:pretrain_images])}, 0
    for split, counts in items_per_mosaic.items():
        flat = held_out[cursor : cursor + int(counts.sum())]
        cursor += len(flat)
        allocation[f"voc_{split}"] = np.split(flat, np.cumsum(counts)[:-1])
    for split, count in places_images.items():
        allocation[f"places_{split}"] = held_out[cursor : cursor + count]
        cursor += count
    return allocation


def save_jpeg(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, quality=JPEG_QUALITY)


# ------------------------------------------------------------------------------------------------ ImageNet
def synthetic_wnid(label: int) -> str:
    return f"n{label:08d}"


def write_pretrain_images(images: np.ndarray, labels: np.ndarray, item_ids: np.ndarray, imagenet_root: Path) -> dict:
    train_dir = layouts.imagenet_train_dir(imagenet_root)
    for label in range(len(FASHION_MNIST_CLASSES)):
        (train_dir / synthetic_wnid(label)).mkdir(parents=True, exist_ok=True)
    offset = (PRETRAIN_CANVAS - images.shape[1]) // 2
    canvas = np.zeros((PRETRAIN_CANVAS, PRETRAIN_CANVAS), dtype=np.uint8)
    for index, item in enumerate(item_ids):
        wnid = synthetic_wnid(int(labels[item]))
        canvas[offset : offset + images.shape[1], offset : offset + images.shape[2]] = images[item]
        save_jpeg(canvas, train_dir / wnid / f"{wnid}_{index}.JPEG")
    counts = np.bincount(labels[item_ids], minlength=len(FASHION_MNIST_CLASSES))
    return {synthetic_wnid(label): int(count) for label, count in enumerate(counts)}


# ------------------------------------------------------------------------------------------------ VOC2007
def side_range(canvas_size: int, fractions: tuple[float, float]) -> tuple[int, int]:
    return round(canvas_size * fractions[0]), round(canvas_size * fractions[1])


def paste_item(canvas: np.ndarray, item: np.ndarray, side: int, top: int, left: int) -> dict | None:
    """Max-blend ``item`` resized to ``side`` at (top, left) (may overhang); return the visible foreground's
    box (VOC 1-based inclusive) and visible fraction, or None when none of it is visible."""
    resized = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
    size = canvas.shape[0]
    y0, y1, x0, x1 = max(top, 0), min(top + side, size), max(left, 0), min(left + side, size)
    visible_part = resized[y0 - top : y1 - top, x0 - left : x1 - left]
    np.maximum(canvas[y0:y1, x0:x1], visible_part, out=canvas[y0:y1, x0:x1])
    visible = visible_part > FOREGROUND_THRESHOLD
    total = int((resized > FOREGROUND_THRESHOLD).sum())
    if not visible.any() or total == 0:
        return None
    rows, columns = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    bbox = (x0 + int(columns[0]) + 1, y0 + int(rows[0]) + 1, x0 + int(columns[-1]) + 1, y0 + int(rows[-1]) + 1)
    return {"bbox": bbox, "visible_fraction": int(visible.sum()) / total}


def compose_mosaic(images: np.ndarray, labels: np.ndarray, item_ids: np.ndarray, canvas_size: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One VOC-style canvas and its annotated objects (name, bbox, difficult, truncated)."""
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
    low, high = side_range(canvas_size, VOC_SIDE_FRACTIONS)
    objects = []
    for item in item_ids:
        side = int(rng.integers(low, high + 1))
        top, left = (int(value) for value in rng.integers(-(side // 2), canvas_size - side // 2 + 1, size=2))
        placed = paste_item(canvas, images[item], side, top, left)
        if placed is None:
            continue
        xmin, ymin, xmax, ymax = placed["bbox"]
        tiny = max(xmax - xmin + 1, ymax - ymin + 1) < MIN_OBJECT_SIDE
        objects.append({
            "name": FASHION_MNIST_CLASSES[int(labels[item])],
            "bbox": placed["bbox"],
            "difficult": placed["visible_fraction"] < MIN_VISIBLE_FRACTION or tiny,
            "truncated": placed["visible_fraction"] < 1.0,
        })
    return canvas, objects


def annotation_xml(image_id: str, canvas_size: int, objects: list[dict]) -> ElementTree.ElementTree:
    root = ElementTree.Element("annotation")
    for tag, text in (("folder", "VOC2007"), ("filename", f"{image_id}.jpg")):
        ElementTree.SubElement(root, tag).text = text
    source = ElementTree.SubElement(root, "source")
    ElementTree.SubElement(source, "database").text = "Fashion-MNIST mosaics (ssl_challenge embedded data)"
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", canvas_size), ("height", canvas_size), ("depth", 1)):
        ElementTree.SubElement(size, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for item in objects:
        element = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(element, "name").text = item["name"]
        ElementTree.SubElement(element, "pose").text = "Unspecified"
        ElementTree.SubElement(element, "truncated").text = str(int(item["truncated"]))
        ElementTree.SubElement(element, "difficult").text = str(int(item["difficult"]))
        box = ElementTree.SubElement(element, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), item["bbox"]):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.indent(root, space="\t")
    return ElementTree.ElementTree(root)


def write_voc07(images: np.ndarray, labels: np.ndarray, allocation: dict, voc_root: Path, canvas_size: int,
                rngs: dict[str, np.random.Generator]) -> dict:
    """Mosaics, annotations and ImageSets of both splits; ids run on from trainval to test, 6-digit."""
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (layouts.voc07_dir(voc_root) / folder).mkdir(parents=True, exist_ok=True)
    classes, summary, next_id = embedded_voc_classes(), {}, 1
    for split, rng in rngs.items():
        image_ids, label_rows, n_objects, n_difficult = [], [], 0, 0
        for item_ids in allocation[f"voc_{split}"]:
            image_id = f"{next_id:06d}"
            next_id += 1
            canvas, objects = compose_mosaic(images, labels, item_ids, canvas_size, rng)
            save_jpeg(canvas, layouts.voc07_image_path(voc_root, image_id))
            annotation_xml(image_id, canvas_size, objects).write(layouts.voc07_annotation_path(voc_root, image_id))
            image_ids.append(image_id)
            label_rows.append(image_labels_from_objects(objects, classes))
            n_objects += len(objects)
            n_difficult += sum(item["difficult"] for item in objects)
        label_matrix = np.stack(label_rows)
        write_voc07_image_sets(voc_root, split, image_ids, label_matrix, classes)
        summary[split] = {
            "images": len(image_ids),
            "objects": n_objects,
            "difficult_objects": n_difficult,
            "positives_per_class": dict(zip(classes, (label_matrix == 1).sum(axis=0).tolist())),
            "difficult_only_per_class": dict(zip(classes, (label_matrix == 0).sum(axis=0).tolist())),
        }
    return summary


def write_voc07_image_sets(voc_root: Path, split: str, image_ids: list[str], label_matrix: np.ndarray,
                           classes: list[str]) -> None:
    """``<split>.txt`` and ``<class>_<split>.txt`` formatted as VOC's own (``000005 -1``, ``000007  1``)."""
    write_text_atomic(layouts.voc07_split_list_file(voc_root, split), "".join(f"{i}\n" for i in image_ids))
    for column, class_name in enumerate(classes):
        lines = "".join(f"{image_id} {int(label):2d}\n" for image_id, label in zip(image_ids, label_matrix[:, column]))
        write_text_atomic(layouts.voc07_class_list_file(voc_root, class_name, split), lines)


# ------------------------------------------------------------------------------------------------ Places205
def write_places205(images: np.ndarray, labels: np.ndarray, allocation: dict, places_root: Path, canvas_size: int,
                    rng: np.random.Generator) -> dict:
    """One item per canvas, fully visible; files ``images256/<letter>/<class>/<class>_<n>.jpg``."""
    images_dir = places_root / "images256"
    low, high = side_range(canvas_size, PLACES_SIDE_FRACTIONS)
    counts, number = {}, 0
    for split in layouts.PLACES205_SPLITS:
        lines = []
        for item in allocation[f"places_{split}"]:
            class_name = FASHION_MNIST_CLASSES[int(labels[item])]
            relative = f"{class_name[0]}/{class_name}/{class_name}_{number:06d}.jpg"
            number += 1
            side = int(rng.integers(low, high + 1))
            top, left = (int(value) for value in rng.integers(0, canvas_size - side + 1, size=2))
            canvas = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
            paste_item(canvas, images[item], side, top, left)
            (images_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(canvas, images_dir / relative)
            lines.append(f"{relative} {int(labels[item])}\n")
        write_text_atomic(layouts.places205_list_file(places_root, split), "".join(lines))
        split_counts = np.bincount(labels[allocation[f"places_{split}"]], minlength=len(FASHION_MNIST_CLASSES))
        counts[split] = dict(zip(FASHION_MNIST_CLASSES, split_counts.tolist()))
    return counts


# ------------------------------------------------------------------------------------------------ the workflow stage
def prepare_embedded_data(embedded: dict, out_root: str | os.PathLike, log: logging.Logger) -> dict:
    """Build the embedded data set under ``out_root``; ``manifest.json`` is written last (the rule's output)."""
    options = dict(embedded)
    fashion_mnist_dir = options.pop("fashion_mnist_dir")
    out_root = Path(out_root)
    for stale in ("imagenet", "VOCdevkit", "places205"):  # a killed build leaves partial trees: start clean
        shutil.rmtree(out_root / stale, ignore_errors=True)
    manifest = build_embedded_data(fashion_mnist_dir, out_root, **options)
    log.info("embedded data: %s", json.dumps({k: v for k, v in manifest.items() if k != "sources"}))
    return manifest
