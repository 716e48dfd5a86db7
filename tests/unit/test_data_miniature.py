"""The miniature of the full-scale data sets (ssl_challenge.data.miniature): the real layouts, the 20 VOC classes
with enough positives for the SVM protocol, 256 px colour images, no item used twice."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from layouts_fixture import make_tiny_fashion_mnist
from ssl_challenge.data import layouts
from ssl_challenge.data.miniature import IMAGE_SIDE, VOC07_CLASSES, build_miniature
from ssl_challenge.data.voc07 import parse_annotation, read_voc07_labels

SIZES = {"imagenet_train": 10, "imagenet_val": 10, "voc_trainval": 60, "voc_test": 20, "places_train": 10,
         "places_val": 10}


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("miniature")
    make_tiny_fashion_mnist(root / "fashion", n_train=200, n_test=60)
    manifest = build_miniature(root / "fashion", root / "data", sizes=SIZES)
    return root / "data", manifest


def test_the_layout_checks_of_the_full_scale_run_pass(miniature):
    data, _ = miniature
    assert len(layouts.check_imagenet_root(data / "imagenet")) == 10
    assert layouts.check_voc07_root(data / "VOCdevkit", VOC07_CLASSES) == VOC07_CLASSES
    layouts.check_places205_root(data / "places205")
    for split in ("train", "val"):
        files = sorted((data / "imagenet" / split).glob("n*/n*_*.JPEG"))
        assert len(files) == SIZES[f"imagenet_{split}"]
        assert all(path.name.startswith(path.parent.name + "_") for path in files)


def test_every_voc_class_has_three_trainval_and_one_test_positive(miniature):
    data, manifest = miniature
    for split, needed in (("trainval", 3), ("test", 1)):
        _, labels = read_voc07_labels(data / "VOCdevkit", split, VOC07_CLASSES)
        assert (labels == 1).sum(axis=0).min() >= needed, split
    assert json.loads((data / "manifest.json").read_text())["counts"] == manifest["counts"]


def test_images_are_colour_jpegs_at_least_256_px(miniature):
    data, _ = miniature
    images = [next((data / "imagenet" / "train").glob("*/*.JPEG")),
              next((data / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg")),
              next((data / "places205" / "images256").rglob("*.jpg"))]
    for path in images:
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= IMAGE_SIDE, path


def test_annotations_name_voc_classes_and_boxes_inside_the_image(miniature):
    data, _ = miniature
    for xml in sorted((data / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[:20]:
        for item in parse_annotation(xml):
            assert item["name"] in VOC07_CLASSES
            xmin, ymin, xmax, ymax = item["bbox"]
            assert 1 <= xmin <= xmax <= IMAGE_SIDE and 1 <= ymin <= ymax <= IMAGE_SIDE


def test_an_existing_tree_is_refused(miniature):
    data, _ = miniature
    with pytest.raises(FileExistsError, match="remove"):
        build_miniature(data.parent / "fashion", data, sizes=SIZES)


def test_too_few_voc_images_for_the_svm_protocol_is_refused(tmp_path):
    with pytest.raises(ValueError, match="voc_trainval"):
        build_miniature(tmp_path, tmp_path / "data", sizes={"voc_trainval": 40})
