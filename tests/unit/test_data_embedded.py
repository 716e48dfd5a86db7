"""The IDX reader and the embedded data builder (Fashion-MNIST in the real ImageNet, VOC07, Places205 layouts)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layouts_fixture import make_tiny_fashion_mnist, write_idx
from ssl_challenge.data import layouts
from ssl_challenge.data.embedded import (
    MIN_OBJECT_SIDE,
    build_embedded_data,
    embedded_voc_classes,
)
from ssl_challenge.data.idx import read_idx
from ssl_challenge.data.imagenet import list_imagenet_images
from ssl_challenge.data.places205 import read_places205_list
from ssl_challenge.data.voc07 import image_labels_from_objects, parse_annotation, read_voc07_labels

SMALL = dict(pretrain_images=50, voc_trainval=20, voc_test=20, places_train=20, places_val=10)
REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx.gz", array, compress=compress)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), array)


def test_read_idx_hand_written_int32_bytes(tmp_path):
    # type 0x0C = big-endian int32, 1 dimension of size 2: values 1 and -2
    (tmp_path / "b.idx").write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 255, 255, 255, 254]))
    values = read_idx(tmp_path / "b.idx")
    assert values.tolist() == [1, -2] and values.dtype == np.int32


def test_read_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="bad.idx: not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3]))
    with pytest.raises(ValueError, match="truncated.idx: IDX file is truncated"):
        read_idx(truncated)
    cut_gzip = tmp_path / "cut.gz"
    cut_gzip.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(cut_gzip)


# ------------------------------------------------------------------------------------------------ builder
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    make_tiny_fashion_mnist(root / "fmnist", n_train=200, n_test=60)
    manifest = build_embedded_data(root / "fmnist", root / "out", seed=3, **SMALL)
    return root, manifest


def test_layouts_are_the_real_ones(built):
    root, manifest = built
    out = root / "out"
    assert layouts.check_imagenet_root(out / "imagenet") == [f"n{label:08d}" for label in range(10)]
    assert layouts.check_voc07_root(out / "VOCdevkit", embedded_voc_classes()) == embedded_voc_classes()
    layouts.check_places205_root(out / "places205")
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["counts"]["pretrain_images"] == 50 and manifest["source_items"] == {"train": 200, "t10k": 60}
    assert {source["bytes"] > 0 for source in manifest["sources"].values()} == {True}


def test_items_are_disjoint_and_pretraining_uses_the_training_split(built):
    root, _ = built
    provenance = json.loads((root / "out" / "provenance.json").read_text())
    parts = {
        "pretrain": provenance["pretrain"],
        "voc_trainval": [item for mosaic in provenance["voc_trainval"] for item in mosaic],
        "voc_test": [item for mosaic in provenance["voc_test"] for item in mosaic],
        "places_train": provenance["places_train"],
        "places_val": provenance["places_val"],
    }
    everything = [item for items in parts.values() for item in items]
    assert len(everything) == len(set(everything))
    assert len(parts["pretrain"]) == 50 and max(parts["pretrain"]) < 200
    assert [len(mosaic) for mosaic in provenance["voc_test"]] and max(map(len, provenance["voc_test"])) <= 4


def test_pretraining_images_are_the_centred_items(built):
    root, _ = built
    truth = make_tiny_fashion_mnist(root / "again", n_train=200, n_test=60)  # same deterministic items
    provenance = json.loads((root / "out" / "provenance.json").read_text())
    paths = list_imagenet_images(root / "out" / "imagenet")
    assert len(paths) == 50
    first = paths[0]
    index = int(first.stem.split("_")[1])
    item = provenance["pretrain"][index]
    with Image.open(first) as image:
        assert image.size == (32, 32)
        pixels = np.asarray(image.convert("L"), dtype=np.int16)
    assert np.abs(pixels[2:30, 2:30] - truth["train"][0][item]).max() < 40  # JPEG at quality 95
    assert first.parent.name == f"n{truth['train'][1][item]:08d}"


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_voc_labels_follow_the_annotations(built, split):
    root, manifest = built
    voc = root / "out" / "VOCdevkit"
    classes = embedded_voc_classes()
    ids, labels = read_voc07_labels(voc, split, classes)
    assert len(ids) == 20 and all(len(image_id) == 6 for image_id in ids)
    n_objects = n_difficult = 0
    for image_id, row in zip(ids, labels):
        objects = parse_annotation(layouts.voc07_annotation_path(voc, image_id))
        assert np.array_equal(image_labels_from_objects(objects, classes), row)
        for item in objects:
            xmin, ymin, xmax, ymax = item["bbox"]
            assert 1 <= xmin <= xmax <= 64 and 1 <= ymin <= ymax <= 64
            if max(xmax - xmin, ymax - ymin) + 1 < MIN_OBJECT_SIDE:
                assert item["difficult"]
        n_objects += len(objects)
        n_difficult += sum(item["difficult"] for item in objects)
    summary = manifest["voc07"][split]
    assert (summary["objects"], summary["difficult_objects"]) == (n_objects, n_difficult)
    assert summary["positives_per_class"] == dict(zip(classes, (labels == 1).sum(axis=0).tolist()))


def test_voc_splits_use_disjoint_image_ids(built):
    root, _ = built
    voc = root / "out" / "VOCdevkit"
    trainval, _ = read_voc07_labels(voc, "trainval", embedded_voc_classes())
    test, _ = read_voc07_labels(voc, "test", embedded_voc_classes())
    assert not set(trainval) & set(test)


def test_places_lists_name_the_class_folders(built):
    root, manifest = built
    for split, count in (("train", 20), ("val", 10)):
        relative_paths, labels = read_places205_list(root / "out" / "places205", split)
        assert len(relative_paths) == count
        for path, label in zip(relative_paths, labels):
            letter, class_name, _ = path.split("/")
            assert class_name == embedded_voc_classes()[label] and letter == class_name[0]
        assert sum(manifest["places205_images_per_class"][split].values()) == count


def test_build_is_deterministic_and_refuses_to_mix_trees(built, tmp_path):
    root, manifest = built
    again = build_embedded_data(root / "fmnist", tmp_path / "out", seed=3, **SMALL)
    assert again == manifest
    for relative in ("VOCdevkit/VOC2007/JPEGImages/000007.jpg", "places205/trainvalsplit_places205/val_places205.csv",
                     "VOCdevkit/VOC2007/Annotations/000021.xml", "provenance.json"):
        assert (tmp_path / "out" / relative).read_bytes() == (root / "out" / relative).read_bytes()
    with pytest.raises(FileExistsError, match="imagenet"):
        build_embedded_data(root / "fmnist", tmp_path / "out", seed=3, **SMALL)


def test_sizes_beyond_the_source_are_named(built, tmp_path):
    root, _ = built
    with pytest.raises(ValueError, match="'data.embedded.pretrain_images' = 500"):
        build_embedded_data(root / "fmnist", tmp_path / "a", **dict(SMALL, pretrain_images=500))
    with pytest.raises(ValueError, match="held-out items"):
        build_embedded_data(root / "fmnist", tmp_path / "b", **dict(SMALL, voc_test=200))
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        (root / "broken").mkdir()
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
            (root / "broken" / name).write_bytes((root / "fmnist" / name).read_bytes())
        build_embedded_data(root / "broken", tmp_path / "c", **SMALL)


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_small_build_from_the_real_fashion_mnist(tmp_path):
    manifest = build_embedded_data(REAL_FASHION_MNIST, tmp_path, **SMALL)
    assert manifest["source_items"] == {"train": 60000, "t10k": 10000}
    assert manifest["voc07"]["trainval"]["objects"] >= 20
