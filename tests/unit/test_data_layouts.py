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


# ------------------------------------------------------------------------------------------------ containment
@pytest.mark.parametrize("relative, refused", [
    ("a/abbey/x.jpg", False), ("./a/x.jpg", False), ("a/..b/x.jpg", False), ("..a/x.jpg", False),
    ("../x.jpg", True), ("a/../../x.jpg", True), ("a/..", True), ("..", True), ("/etc/passwd", True),
])
def test_listed_path_syntax(relative, refused):
    if refused:
        with pytest.raises(layouts.PathOutsideRootError, match=r"list.txt:7"):
            layouts.check_listed_path(relative, "list.txt:7")
    else:
        layouts.check_listed_path(relative, "list.txt:7")


def append_line(list_file, line):
    list_file.write_text(list_file.read_text() + line + "\n")
    return len(list_file.read_text().splitlines())


@pytest.mark.parametrize("bad_path", ["../../../../etc/passwd", "a/abbey/../../../outside.jpg", "/etc/passwd"])
def test_places205_paths_leaving_the_root_are_refused_with_their_line(tmp_path, bad_path):
    make_tiny_places205(tmp_path / "places", n_classes=2, per_class_train=2, per_class_val=1)
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    list_file = layouts.places205_list_file(tmp_path / "places", "train")
    line_number = append_line(list_file, f"{bad_path} 1")  # the last line: the old check read only the first
    expected = rf"train_places205.csv:{line_number}: '{bad_path}'"
    with pytest.raises(layouts.PathOutsideRootError, match=expected):
        layouts.check_places205_root(tmp_path / "places")
    with pytest.raises(layouts.PathOutsideRootError, match=expected):
        read_places205_list(tmp_path / "places", "train")


def test_places205_layout_check_reads_every_line(tmp_path):
    make_tiny_places205(tmp_path / "places", n_classes=2, per_class_train=3, per_class_val=1)
    list_file = layouts.places205_list_file(tmp_path / "places", "train")
    lines = list_file.read_text().splitlines()
    for bad_line in ("a/abbey/x.jpg", "a/abbey/x.jpg -1", "a/abbey/x.jpg 1 2", "a/abbey/x.jpg one"):
        list_file.write_text("\n".join(lines[:3] + ["", bad_line] + lines[3:]) + "\n")
        with pytest.raises(ValueError, match=r"train_places205.csv:5: .* is not '<path under images256> <label"):
            layouts.check_places205_root(tmp_path / "places")
        with pytest.raises(ValueError, match=r"train_places205.csv:5"):
            read_places205_list(tmp_path / "places", "train")
    list_file.write_text("\n".join(lines + ["s/ski_slope/never_written.jpg 4"]) + "\n")
    layouts.check_places205_root(tmp_path / "places")  # syntax only: listed files past the first are not stat-ed
    list_file.write_text("\n\n")
    with pytest.raises(ValueError, match="no images listed"):
        layouts.check_places205_root(tmp_path / "places")


def test_places205_symlink_leaving_the_root_is_named_and_one_inside_is_allowed(tmp_path):
    truth = make_tiny_places205(tmp_path / "places", n_classes=3, per_class_train=1, per_class_val=1)
    images_dir = tmp_path / "places" / "images256"
    outside = tmp_path / "elsewhere" / "kitchen"
    outside.mkdir(parents=True)
    (outside / "stolen.jpg").write_bytes(b"not yours")
    (images_dir / "k").mkdir()
    (images_dir / "k" / "kitchen").symlink_to(outside)  # a category folder linked out of the root
    (images_dir / "b" / "bedroom_copy").symlink_to(images_dir / "a" / "abbey")  # a link that stays inside
    inside_file = images_dir / "b" / "inside_link.jpg"
    inside_file.symlink_to(images_dir / truth["train"][0][0])
    list_file = layouts.places205_list_file(tmp_path / "places", "train")
    good_lines = list_file.read_text()
    abbey_file = truth["train"][0][0].split("/")[-1]
    list_file.write_text(good_lines + f"b/bedroom_copy/{abbey_file} 0\nb/inside_link.jpg 2\n")
    relative_paths, labels = read_places205_list(tmp_path / "places", "train")
    assert relative_paths[-2:] == [f"b/bedroom_copy/{abbey_file}", "b/inside_link.jpg"]
    assert labels.tolist()[-2:] == [0, 2]
    list_file.write_text(good_lines + "k/kitchen/stolen.jpg 3\n")
    with pytest.raises(layouts.PathOutsideRootError,
                       match=rf"train_places205.csv:4: .*the symbolic link {images_dir}/k/kitchen points to {outside}"):
        read_places205_list(tmp_path / "places", "train")
    (images_dir / "k" / "kitchen").unlink()
    (images_dir / "k" / "kitchen").mkdir()
    (images_dir / "k" / "kitchen" / "stolen.jpg").symlink_to(outside / "stolen.jpg")  # a file linked out
    with pytest.raises(layouts.PathOutsideRootError, match=rf"csv:4: .*link {images_dir}/k/kitchen/stolen.jpg"):
        read_places205_list(tmp_path / "places", "train")


def test_a_root_that_is_itself_a_link_is_fine(tmp_path):
    truth = make_tiny_places205(tmp_path / "disk" / "places", n_classes=2)
    (tmp_path / "places").symlink_to(tmp_path / "disk" / "places")
    layouts.check_places205_root(tmp_path / "places")
    assert read_places205_list(tmp_path / "places", "val")[0] == truth["val"][0]
    make_tiny_imagenet(tmp_path / "disk" / "imagenet", n_classes=1, per_class=2)
    (tmp_path / "imagenet").symlink_to(tmp_path / "disk" / "imagenet")
    assert len(list_imagenet_images(tmp_path / "imagenet")) == 2


def test_imagenet_links_leaving_the_root_are_refused_inside_allowed(tmp_path):
    root = tmp_path / "imagenet"
    written = make_tiny_imagenet(root, n_classes=2, per_class=2)
    outside = make_tiny_imagenet(tmp_path / "other", n_classes=1, per_class=1)[0]
    extra = make_tiny_imagenet(root / "extra", n_classes=1, per_class=1)[0]  # inside the root, outside train/
    (root / "train" / "n09999999").symlink_to(extra.parent)  # a class folder linked inside the root: allowed
    listed = list_imagenet_images(root)
    assert listed == sorted(written + [root / "train" / "n09999999" / extra.name])
    assert layouts.check_imagenet_root(root)[-1] == "n09999999"
    (root / "train" / "n01000000" / "n01000000_9.JPEG").symlink_to(outside)  # an image linked out
    with pytest.raises(layouts.PathOutsideRootError, match=rf"link {root}/train/n01000000/n01000000_9.JPEG points"):
        list_imagenet_images(root)
    (root / "train" / "n01000000" / "n01000000_9.JPEG").unlink()
    (root / "train" / "n08888888").symlink_to(outside.parent)  # a class folder linked out
    for check in (list_imagenet_images, layouts.check_imagenet_root):
        with pytest.raises(layouts.PathOutsideRootError, match=rf"link {root}/train/n08888888 points to"):
            check(root)
