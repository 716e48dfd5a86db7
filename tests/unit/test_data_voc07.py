"""VOC2007 label and annotation readers on a tiny VOCdevkit in the real layout."""
from __future__ import annotations

import numpy as np
import pytest

from layouts_fixture import make_tiny_voc07
from ssl_challenge.data.layouts import PathOutsideRootError, check_voc07_root
from ssl_challenge.data.voc07 import (
    image_labels_from_objects,
    parse_annotation,
    read_image_set,
    read_split_annotations,
    read_voc07_labels,
    voc07_class_names,
)

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def voc_root(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=3, n_test=2)
    return tmp_path / "VOCdevkit"


def test_labels_follow_the_one_minus_one_zero_rule(voc_root):
    ids, labels = read_voc07_labels(voc_root, "trainval", CLASSES)
    assert ids == ["000001", "000002", "000003"]
    # image 1: cat + difficult dog; image 2: dog; image 3: bird + difficult cat (hand-derived from the fixture)
    expected = np.array([[1, 0, -1], [-1, 1, -1], [0, -1, 1]], dtype=np.int8)
    assert labels.dtype == np.int8 and np.array_equal(labels, expected)
    test_ids, test_labels = read_voc07_labels(voc_root, "test", ["dog", "cat"])
    assert test_ids == ["000004", "000005"] and test_labels.shape == (2, 2)
    assert test_labels.tolist() == [[-1, 1], [1, -1]]  # image 4: a cat; image 5: a dog and a difficult bird
    assert read_image_set(voc_root, "test") == test_ids


def test_class_names_from_disk_are_sorted(voc_root):
    assert voc07_class_names(voc_root) == ["bird", "cat", "dog"]


def test_parse_annotation_reads_difficult_and_truncated(voc_root):
    objects = parse_annotation(voc_root / "VOC2007" / "Annotations" / "000001.xml")
    assert objects == [
        {"name": "cat", "bbox": (2, 3, 12, 10), "difficult": False, "truncated": False},
        {"name": "dog", "bbox": (1, 1, 5, 4), "difficult": True, "truncated": True},
    ]
    labels = image_labels_from_objects(objects, CLASSES)
    assert labels.tolist() == [1, 0, -1]


def test_parse_annotation_tolerates_later_releases_and_names_bad_files(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text("<annotation><object><name>cat</name><bndbox><xmin>1.0</xmin><ymin>2</ymin>"
                    "<xmax>30</xmax><ymax>40.0</ymax></bndbox></object></annotation>")
    assert parse_annotation(path) == [{"name": "cat", "bbox": (1, 2, 30, 40), "difficult": False,
                                       "truncated": False}]
    path.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(ValueError, match=r"a.xml: object 0 \(cat\) has no <bndbox>"):
        parse_annotation(path)
    path.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="a.xml"):
        parse_annotation(path)


def annotation_with_box(xmin, ymin, xmax, ymax, size="<size><width>24</width><height>18</height></size>"):
    return (f"<annotation>{size}<object><name>cat</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>")


def test_boxes_outside_the_image_or_inverted_are_named(tmp_path):
    path = tmp_path / "000007.xml"
    path.write_text(annotation_with_box(1, 1, 24, 18))  # the whole 24 x 18 image: fine
    assert parse_annotation(path)[0]["bbox"] == (1, 1, 24, 18)
    for box in ((0, 1, 10, 10), (1, 1, 25, 10), (1, 1, 10, 19)):
        path.write_text(annotation_with_box(*box))
        with pytest.raises(ValueError, match=r"000007.xml: object 0 \(cat\): bounding box .* leaves the 24 x 18"):
            parse_annotation(path)
    path.write_text(annotation_with_box(9, 1, 8, 10))
    with pytest.raises(ValueError, match=r"000007.xml: object 0 \(cat\): bounding box \(9, 1, 8, 10\) has xmin > xmax"):
        parse_annotation(path)
    path.write_text(annotation_with_box(1, 5, 8, 4, size=""))  # checked without <size> too
    with pytest.raises(ValueError, match="000007.xml.*ymin > ymax"):
        parse_annotation(path)
    path.write_text(annotation_with_box(1, 1, 2, 2, size="<size><width>0</width><height>18</height></size>"))
    with pytest.raises(ValueError, match=r"000007.xml: <size> is 0 x 18"):
        parse_annotation(path)


def test_split_annotations_follow_the_image_set(voc_root):
    annotations = read_split_annotations(voc_root, "test")
    assert list(annotations) == ["000004", "000005"]
    assert annotations["000004"] == [{"name": "cat", "bbox": (2, 3, 12, 10), "difficult": False,
                                      "truncated": False}]
    (voc_root / "VOC2007" / "Annotations" / "000005.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"000005.xml of image '000005' \(listed in .*test.txt\)"):
        read_split_annotations(voc_root, "test")


def test_disagreeing_class_files_are_named(voc_root):
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    lines = (main / "dog_trainval.txt").read_text().splitlines()
    (main / "dog_trainval.txt").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(ValueError, match=r"dog_trainval.txt lists other images \(missing \['000003'\].*cat_trainval"):
        read_voc07_labels(voc_root, "trainval", CLASSES)
    (main / "dog_trainval.txt").write_text("\n".join(lines[::-1]) + "\n")
    with pytest.raises(ValueError, match="different order"):
        read_voc07_labels(voc_root, "trainval", CLASSES)


def test_bad_label_line_and_unknown_class(voc_root):
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    (main / "cat_test.txt").write_text("000004  1\n000005  2\n")
    with pytest.raises(ValueError, match=r"cat_test.txt:2"):
        read_voc07_labels(voc_root, "test", CLASSES)
    with pytest.raises(FileNotFoundError, match="horse_test.txt"):
        read_voc07_labels(voc_root, "test", ["horse"])
    with pytest.raises(ValueError, match="'horse'"):
        image_labels_from_objects([{"name": "horse", "difficult": False}], CLASSES)


@pytest.mark.parametrize("bad_id", ["../x", "/abs", "../../../etc/passwd", "000001/../../x"])
def test_ids_leaving_the_root_are_refused_with_their_line(voc_root, bad_id):
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    split_list = (main / "trainval.txt").read_text()
    (main / "trainval.txt").write_text(split_list + f"{bad_id}\n")
    with pytest.raises(PathOutsideRootError, match=rf"trainval.txt:4: '{bad_id}'"):
        read_image_set(voc_root, "trainval")
    with pytest.raises(PathOutsideRootError, match=r"trainval.txt:4"):
        check_voc07_root(voc_root)
    (main / "trainval.txt").write_text(split_list)
    dog_lines = (main / "dog_trainval.txt").read_text().splitlines()
    (main / "dog_trainval.txt").write_text("\n".join([dog_lines[0], f"{bad_id} -1"] + dog_lines[1:]) + "\n")
    with pytest.raises(PathOutsideRootError, match=rf"dog_trainval.txt:2: '{bad_id}'"):
        read_voc07_labels(voc_root, "trainval", ["dog", "cat"])
    with pytest.raises(PathOutsideRootError, match=r"dog_trainval.txt:2"):
        check_voc07_root(voc_root)


def test_layout_check_reads_every_line_of_every_list(voc_root):
    main = voc_root / "VOC2007" / "ImageSets" / "Main"
    check_voc07_root(voc_root)
    (main / "bird_test.txt").write_text("000004 -1\n000005  2\n")  # the old check read one line of trainval.txt
    with pytest.raises(ValueError, match=r"bird_test.txt:2: '000005 2' is not '<image id> <1\|-1\|0>'"):
        check_voc07_root(voc_root)
    (main / "bird_test.txt").write_text("000004 -1\n000005 1\n")
    (main / "test.txt").write_text("000004\n000005 extra\n")
    with pytest.raises(ValueError, match=r"test.txt:2: '000005 extra' is not '<image id>'"):
        check_voc07_root(voc_root)


def test_image_linked_out_of_the_root_is_refused_inside_allowed(voc_root, tmp_path):
    images = voc_root / "VOC2007" / "JPEGImages"
    (images / "000002.jpg").unlink()
    (images / "000002.jpg").symlink_to(images / "000001.jpg")  # a link that stays inside: allowed
    assert read_voc07_labels(voc_root, "trainval", CLASSES)[0] == ["000001", "000002", "000003"]
    (tmp_path / "elsewhere.jpg").write_bytes(b"not a VOC image")
    (images / "000002.jpg").unlink()
    (images / "000002.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    with pytest.raises(PathOutsideRootError, match=rf"cat_trainval.txt:2: .*link {images}/000002.jpg points to"):
        read_voc07_labels(voc_root, "trainval", CLASSES)
