"""Layout checks and list readers of ImageNet and Places205 on tiny trees in the real layouts."""
from __future__ import annotations

import pytest

from layouts_fixture import make_tiny_imagenet, make_tiny_places205, make_tiny_voc07
from ssl_challenge.data import layouts
from ssl_challenge.data.imagenet import list_imagenet_images
from ssl_challenge.data.places205 import places205_image_paths, read_places205_list


def test_layouts_module_stays_torch_free():
    source = layouts.__file__
    text = open(source).read()
    assert "import torch" not in text and "import numpy" not in text


def test_imagenet_check_and_listing(tmp_path):
    written = make_tiny_imagenet(tmp_path / "imagenet", n_classes=2, per_class=3, with_val=True)
    assert layouts.check_imagenet_root(tmp_path / "imagenet") == ["n01000000", "n01000001"]
    listed = list_imagenet_images(tmp_path / "imagenet")
    assert listed == written and all(path.parent.parent.name == "train" for path in listed)
    assert len(list_imagenet_images(tmp_path / "imagenet", "val")) == 6


def test_imagenet_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        layouts.check_imagenet_root(tmp_path / "nowhere")
    flat = tmp_path / "flat" / "train"
    flat.mkdir(parents=True)
    (flat / "a.JPEG").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="one folder per class"):
        layouts.check_imagenet_root(tmp_path / "flat")
    with pytest.raises(FileNotFoundError, match="val"):
        list_imagenet_images(tmp_path / "flat", "val")


def test_voc07_check_returns_classes(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", ["cat", "dog", "bird"], n_trainval=3, n_test=2)
    assert layouts.check_voc07_root(tmp_path / "VOCdevkit") == ["bird", "cat", "dog"]
    assert layouts.check_voc07_root(tmp_path / "VOCdevkit", ["dog", "cat", "bird"]) == ["dog", "cat", "bird"]


def test_voc07_class_mismatch_names_missing_and_extra(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", ["cat", "dog", "bird"], n_trainval=3, n_test=2)
    with pytest.raises(ValueError, match=r"missing class files for \['horse'\].*\['bird'\]"):
        layouts.check_voc07_root(tmp_path / "VOCdevkit", ["cat", "dog", "horse"])


def test_voc07_check_points_at_the_common_mistakes(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", ["cat", "dog"], n_trainval=2, n_test=2)
    with pytest.raises(FileNotFoundError, match="give its parent"):
        layouts.check_voc07_root(tmp_path / "VOCdevkit" / "VOC2007")
    dog_test = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "dog_test.txt"
    dog_test_lines = dog_test.read_text()
    dog_test.unlink()
    with pytest.raises(ValueError, match=r"_test.txt.*\['dog'\]"):
        layouts.check_voc07_root(tmp_path / "VOCdevkit", ["cat", "dog"])
    dog_test.write_text(dog_test_lines)
    (tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml").unlink()
    with pytest.raises(FileNotFoundError, match="000001.xml"):
        layouts.check_voc07_root(tmp_path / "VOCdevkit")
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        layouts.check_voc07_root(tmp_path / "empty_devkit_does_not_exist")


@pytest.mark.parametrize("nested", [False, True])
def test_places205_check_and_list(tmp_path, nested):
    truth = make_tiny_places205(tmp_path / "places", n_classes=3, per_class_train=2, per_class_val=1, nested=nested)
    layouts.check_places205_root(tmp_path / "places")
    for split in ("train", "val"):
        relative_paths, labels = read_places205_list(tmp_path / "places", split)
        assert relative_paths == truth[split][0] and labels.tolist() == truth[split][1]
        assert labels.dtype.name == "int64"
        assert all(path.is_file() for path in places205_image_paths(tmp_path / "places", relative_paths))
    assert any("apartment_building/outdoor" in path for path in truth["train"][0])


def test_places205_errors_name_the_file_and_line(tmp_path):
    make_tiny_places205(tmp_path / "places")
    list_file = layouts.places205_list_file(tmp_path / "places", "val")
    list_file.write_text("a/abbey/x.jpg 0\na/abbey/y.jpg\n")
    with pytest.raises(ValueError, match=r"val_places205.csv:2"):
        read_places205_list(tmp_path / "places", "val")
    list_file.unlink()
    with pytest.raises(FileNotFoundError, match="val_places205.csv"):
        layouts.check_places205_root(tmp_path / "places")
    with pytest.raises(ValueError, match="split"):
        layouts.places205_list_file(tmp_path, "test")
