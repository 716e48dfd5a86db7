"""VOC2007 labels and annotations, read from the official VOCdevkit layout (see :mod:`.layouts`)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np

from . import layouts

POSITIVE, NEGATIVE, DIFFICULT = 1, -1, 0


def voc07_class_names(voc_root: str | os.PathLike) -> list[str]:
    """The classes that have ``ImageSets/Main/<class>_trainval.txt``, sorted (VOC's own order)."""
    return layouts.voc07_classes_on_disk(voc_root, "trainval")


def read_image_set(voc_root: str | os.PathLike, split: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` in file order (an id that is absolute or climbs with ``..``
    is refused, naming the line)."""
    path = layouts.voc07_split_list_file(voc_root, split)
    if not path.is_file():
        raise FileNotFoundError(f"VOC07 image list {path} does not exist; expected {layouts.VOC07_LAYOUT}")
    return [image_id for _, image_id in layouts.voc07_image_set_lines(path)]


def read_class_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """One ``<class>_<split>.txt`` file: image ids and int8 labels in {1, -1, 0}."""
    image_ids, labels, _ = _read_class_lines(path)
    return image_ids, labels


def _read_class_lines(path: Path) -> tuple[list[str], np.ndarray, list[int]]:
    if not path.is_file():
        raise FileNotFoundError(f"VOC07 class list {path} does not exist; expected {layouts.VOC07_LAYOUT}")
    lines = list(layouts.voc07_class_label_lines(path))
    image_ids = [image_id for _, image_id, _ in lines]
    return image_ids, np.asarray([label for _, _, label in lines], dtype=np.int8), [number for number, _, _ in lines]


def read_voc07_labels(
    voc_root: str | os.PathLike, split: str, classes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Image ids and the label matrix int8 [N, C] (1 positive, -1 negative, 0 difficult) of ``split``.

    Rows follow the order of the class files, which must all list the same images in the same order as
    ``ImageSets/Main/<split>.txt`` (when that file exists); a disagreement is an error naming both files.
    Every image's JPEG and annotation must stay inside ``voc_root`` (a symbolic link leading out is refused,
    naming the line of the first class file).
    """
    if not classes:
        raise ValueError(f"{voc_root}: empty VOC07 class list; give the classes or use voc07_class_names()")
    image_ids: list[str] | None = None
    columns = []
    reference_file = None
    for class_name in classes:
        path = layouts.voc07_class_list_file(voc_root, class_name, split)
        ids, labels, line_numbers = _read_class_lines(path)
        if image_ids is None:
            image_ids, reference_file = ids, path
            _check_images_inside(voc_root, ids, [f"{path}:{number}" for number in line_numbers])
        elif ids != image_ids:
            raise ValueError(f"{path} lists {_describe_difference(image_ids, ids)} than {reference_file}; "
                             "every class file of a split must list the same images in the same order")
        columns.append(labels)
    split_file = layouts.voc07_split_list_file(voc_root, split)
    if split_file.is_file() and read_image_set(voc_root, split) != image_ids:
        raise ValueError(f"{reference_file} lists {_describe_difference(read_image_set(voc_root, split), image_ids)} "
                         f"than {split_file}; the class files must list the split's images in its order")
    return image_ids, np.stack(columns, axis=1)


def _check_images_inside(voc_root, image_ids: list[str], where: list[str]) -> None:
    containment = layouts.RootContainment(voc_root)
    for image_id, line in zip(image_ids, where):
        containment.check_path(layouts.voc07_image_path(voc_root, image_id), line)
        containment.check_path(layouts.voc07_annotation_path(voc_root, image_id), line)


def _describe_difference(reference: list[str], other: list[str]) -> str:
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if not missing and not extra:
        return "the same images in a different order" if len(reference) == len(other) else "duplicate images"
    return (f"other images (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"extra {extra[:5]}{'...' if len(extra) > 5 else ''})")


def parse_annotation(xml_path: str | os.PathLike) -> list[dict]:
    """Objects of one VOC annotation file, in file order.

    Each object is ``{"name": str, "bbox": (xmin, ymin, xmax, ymax), "difficult": bool, "truncated": bool}``
    with VOC's 1-based, inclusive pixel coordinates as ints. A missing ``difficult``/``truncated`` tag
    (as in some VOC2012 files) reads as False. A box with xmin > xmax or ymin > ymax, or (when the file has a
    ``<size>``) one that leaves the image (coordinates outside 1..width, 1..height), is a ``ValueError`` naming the
    file and the object: detection AP counts its pixels, so a wrong box would silently change the metric.
    """
    xml_path = Path(xml_path)
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{xml_path}: not a valid VOC annotation XML ({error})") from error
    image_size = _image_size(root, xml_path)
    objects = []
    for index, element in enumerate(root.iter("object")):
        where = f"{xml_path}: object {index}"
        name = _required_text(element, "name", where)
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{where} ({name}) has no <bndbox>")
        bbox = tuple(_pixel(_required_text(bndbox, key, where), where) for key in ("xmin", "ymin", "xmax", "ymax"))
        _check_box(bbox, image_size, f"{where} ({name})")
        objects.append({
            "name": name,
            "bbox": bbox,
            "difficult": _flag(element, "difficult", where),
            "truncated": _flag(element, "truncated", where),
        })
    return objects


def read_split_annotations(voc_root: str | os.PathLike, split: str) -> dict[str, list[dict]]:
    """{image id: objects of :func:`parse_annotation`} for every image of ``ImageSets/Main/<split>.txt``, in
    that order (the ground truth of the detection track)."""
    annotations = {}
    for image_id in read_image_set(voc_root, split):
        path = layouts.voc07_annotation_path(voc_root, image_id)
        if not path.is_file():
            raise FileNotFoundError(f"VOC07 annotation {path} of image {image_id!r} (listed in "
                                    f"{layouts.voc07_split_list_file(voc_root, split)}) does not exist; "
                                    f"expected {layouts.VOC07_LAYOUT}")
        annotations[image_id] = parse_annotation(path)
    return annotations


def image_labels_from_objects(objects: Sequence[dict], classes: Sequence[str]) -> np.ndarray:
    """VOC07's image-level rule, int8 [C]: 1 if a non-difficult object of the class is present, 0 if only
    difficult ones are, -1 otherwise. The embedded builder writes its class files with this rule."""
    labels = np.full(len(classes), NEGATIVE, dtype=np.int8)
    column = {name: index for index, name in enumerate(classes)}
    for item in objects:
        if item["name"] not in column:
            raise ValueError(f"object class {item['name']!r} is not in the class list {list(classes)}")
        index = column[item["name"]]
        if not item["difficult"]:
            labels[index] = POSITIVE
        elif labels[index] == NEGATIVE:
            labels[index] = DIFFICULT
    return labels


def _required_text(element: ElementTree.Element, tag: str, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where} has no <{tag}>")
    return child.text.strip()


def _image_size(root: ElementTree.Element, xml_path: Path) -> tuple[int, int] | None:
    """(width, height) from ``<size>``, or None when the file has no ``<size>``."""
    size = root.find("size")
    if size is None:
        return None
    where = f"{xml_path}: <size>"
    width, height = (_pixel(_required_text(size, tag, where), where) for tag in ("width", "height"))
    if width < 1 or height < 1:
        raise ValueError(f"{where} is {width} x {height}; expected a positive width and height")
    return width, height


def _check_box(bbox: tuple[int, int, int, int], image_size: tuple[int, int] | None, where: str) -> None:
    xmin, ymin, xmax, ymax = bbox
    if xmin > xmax or ymin > ymax:
        raise ValueError(f"{where}: bounding box {bbox} has xmin > xmax or ymin > ymax; expected "
                         "(xmin, ymin, xmax, ymax) with VOC's 1-based inclusive pixels")
    if image_size is not None:
        width, height = image_size
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise ValueError(f"{where}: bounding box {bbox} leaves the {width} x {height} image of <size>; "
                             "expected 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height")


def _flag(element: ElementTree.Element, tag: str, where: str) -> bool:
    child = element.find(tag)
    if child is None or child.text is None:
        return False
    if child.text.strip() not in ("0", "1"):
        raise ValueError(f"{where}: <{tag}> is {child.text!r}, expected 0 or 1")
    return child.text.strip() == "1"


def _pixel(text: str, where: str) -> int:
    """VOC2007 coordinates are integers; a few later releases write '273.0', which is accepted."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: bounding box coordinate {text!r} is not a number") from None
    return int(round(value))
