"""VOC07 images and boxes for the detector, and proposal files for Fast R-CNN.

Coordinates: VOC annotations (and the challenge's detection files) use 1-based inclusive pixels; torchvision uses
continuous coordinates with the image spanning [0, W] x [0, H]. Pixel ``i`` (1-based) covers [i - 1, i], so a VOC
box (xmin, ymin, xmax, ymax) is (xmin - 1, ymin - 1, xmax, ymax) for torchvision and back. The round trip is
exact, and a box's VOC area (with its +1s) equals its continuous area.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data import layouts
from ..data.decoding import open_rgb
from ..data.voc07 import read_split_annotations
from ..core.io import read_json_object


def voc_to_continuous(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] VOC 1-based inclusive -> continuous (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes - np.array([1.0, 1.0, 0.0, 0.0])


def continuous_to_voc(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] continuous (x1, y1, x2, y2) -> VOC 1-based (xmin, ymin, xmax, ymax), as floats."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes + np.array([1.0, 1.0, 0.0, 0.0])


@dataclass(frozen=True)
class DetectionImage:
    image_id: str
    path: Path
    annotation: Path
    boxes: np.ndarray  # float64 [G, 4], continuous coordinates
    labels: np.ndarray  # int64 [G], 1..C (0 is the background)
    difficult: np.ndarray  # bool [G]


class DetectionSet:
    """The images of one VOC07 split with their boxes of ``classes``; objects of other classes are left out.

    ``load(index, flip)`` -> (image float [3, H, W] in 0..1, target {"boxes", "labels"}); training targets leave
    difficult boxes out (as py-faster-rcnn and Detectron's VOC training do). With ``cache`` decoded images stay in
    memory (the embedded 64 px sets: a few MB; with DataLoader workers, in each worker that decodes them).
    """

    def __init__(self, voc_root: str | os.PathLike, split: str, classes: Sequence[str], cache: bool = False):
        self.voc_root, self.split, self.classes = voc_root, split, list(classes)
        column = {name: index + 1 for index, name in enumerate(self.classes)}
        self.images: list[DetectionImage] = []
        for image_id, objects in read_split_annotations(voc_root, split).items():
            own = [item for item in objects if item["name"] in column]
            self.images.append(DetectionImage(
                image_id=image_id, path=layouts.voc07_image_path(voc_root, image_id),
                annotation=layouts.voc07_annotation_path(voc_root, image_id),
                boxes=voc_to_continuous(np.asarray([item["bbox"] for item in own], dtype=np.float64)),
                labels=np.asarray([column[item["name"]] for item in own], dtype=np.int64),
                difficult=np.asarray([bool(item["difficult"]) for item in own], dtype=bool)))
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.images)

    def image_ids(self) -> list[str]:
        return [entry.image_id for entry in self.images]

    def pixels(self, index: int) -> torch.Tensor:
        """uint8 [3, H, W]; an annotated box that leaves the decoded image is an error naming the annotation."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        entry = self.images[index]
        image = torch.from_numpy(np.array(open_rgb(entry.path), dtype=np.uint8)).permute(2, 0, 1).contiguous()
        height, width = image.shape[1:]
        if len(entry.boxes) and ((entry.boxes < 0).any() or (entry.boxes[:, 2] > width).any()
                                 or (entry.boxes[:, 3] > height).any()):
            bad = continuous_to_voc(entry.boxes[(entry.boxes < 0).any(1) | (entry.boxes[:, 2] > width)
                                                | (entry.boxes[:, 3] > height)][:1])[0].astype(int).tolist()
            raise ValueError(f"{entry.annotation}: bounding box {tuple(bad)} leaves the {width} x {height} image "
                             f"{entry.path}; expected 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height. "
                             "Fix the annotation (or the image)")
        if self._cache is not None:
            self._cache[index] = image
        return image

    def load(self, index: int, flip: bool, training: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        entry = self.images[index]
        image = self.pixels(index).float().div_(255.0)
        keep = ~entry.difficult if training else np.ones(len(entry.labels), dtype=bool)
        boxes = torch.from_numpy(entry.boxes[keep].copy()).float().reshape(-1, 4)
        labels = torch.from_numpy(entry.labels[keep].copy())
        if flip:
            image = image.flip(-1)
            boxes = flip_boxes(boxes, image.shape[-1])
        return image, {"boxes": boxes, "labels": labels}


@dataclass(frozen=True)
class DetectionRequest:
    """The images ``indices`` of a :class:`DetectionSet`, each mirrored or not (``flips``, drawn by the caller),
    with training or test targets: everything that determines the batch, so whichever process makes it (a
    DataLoader worker or the training process, ``data.loading.load_batches``) makes the same one."""

    indices: tuple[int, ...]
    flips: tuple[bool, ...]
    training: bool

    def __post_init__(self):
        if len(self.indices) != len(self.flips):
            raise ValueError(f"DetectionRequest: {len(self.indices)} images but {len(self.flips)} flips")


def load_detection_batch(dataset: "DetectionSet", request: DetectionRequest
                         ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``dataset.load`` of each image of ``request``: [(image, target)] in the request's order."""
    return [dataset.load(index, flip, request.training) for index, flip in zip(request.indices, request.flips)]


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Continuous boxes [N, 4] of an image of ``width`` mirrored horizontally."""
    flipped = boxes.clone()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


def read_proposals(path: str | os.PathLike, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Proposal boxes per image from a JSON file {image id: [[xmin, ymin, xmax, ymax], ...]} in VOC's 1-based
    pixels (e.g. selective search converted from the benchmark's files); returns continuous float32 [P, 4] per
    image. Every image of ``image_ids`` needs an entry (possibly empty); errors name the file and the image."""
    path = Path(path)
    data = read_json_object(path, f"proposal file {path} (config key evaluation.voc07_detection.proposals) does "
                            "not exist; expected JSON {image id: [[xmin, ymin, xmax, ymax], ...]}",
                            "{image id: [[xmin, ymin, xmax, ymax], ...]}")
    missing = [image_id for image_id in image_ids if image_id not in data]
    if missing:
        raise ValueError(f"{path}: no proposals for {len(missing)} images (first: {missing[:3]}); every image of "
                         "the split needs an entry (an empty list is allowed)")
    proposals = {}
    for image_id in image_ids:
        boxes = np.asarray(data[image_id], dtype=np.float64)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all()
                           or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise ValueError(f"{path}: image {image_id!r}: proposals must be finite [xmin, ymin, xmax, ymax] boxes "
                             "with xmin <= xmax and ymin <= ymax")
        proposals[image_id] = voc_to_continuous(boxes).astype(np.float32)
    return proposals
