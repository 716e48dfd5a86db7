"""Feature concatenation: per-member L2 normalisation, layer selection, metadata, mismatch errors."""
from __future__ import annotations

import numpy as np
import pytest

from ssl_challenge.stages.concat import concatenate_blocks, concatenate_feature_files
from ssl_challenge.evaluation.svm_solver import l2_normalise_rows
from ssl_challenge.data.feature_files import load_features, save_features


def test_rows_are_divided_by_norm_plus_epsilon():
    block = np.array([[3.0, 4.0], [0.0, 0.0]])
    # ||(3, 4)|| = 5 -> (3, 4) / 5.00001; the zero row stays zero instead of dividing by zero.
    expected = np.array([[3 / 5.00001, 4 / 5.00001], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise_rows(block), expected, rtol=1e-12)
    # the concatenation stores the normalised block in float32
    np.testing.assert_array_equal(concatenate_blocks([block]), expected.astype(np.float32))


def test_each_block_is_normalised_so_scale_does_not_matter():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    unscaled = concatenate_blocks([first, second])
    scaled = concatenate_blocks([first, 100.0 * second])
    assert unscaled.dtype == np.float32 and unscaled.shape == (5, 7)
    # Equal up to the epsilon: 1e-5 / ||row|| is a relative difference of a few 1e-6 for the unscaled block.
    np.testing.assert_allclose(scaled, unscaled, rtol=2e-5, atol=1e-6)
    # Each member contributes a unit-norm part: squared row norms are 2 (up to the epsilon).
    np.testing.assert_allclose((unscaled**2).sum(1), 2.0, rtol=1e-4)
    with pytest.raises(ValueError, match="different numbers of rows"):
        concatenate_blocks([first, second[:4]])


def write_member(path, features, ids, labels, model):
    save_features(path, features, {"split": "voc07_test", "image_ids": ids, "labels": labels, "model": model})


def test_files_are_concatenated_per_common_layer(tmp_path):
    rng = np.random.default_rng(1)
    ids, labels = ["a", "b", "c"], [0, 1, 0]
    one = {"feat4": rng.normal(size=(3, 2)), "feat5": rng.normal(size=(3, 3))}
    two = {"feat5": rng.normal(size=(3, 5)), "feat3": rng.normal(size=(3, 2))}
    write_member(tmp_path / "one.npz", one, ids, labels, "dc")
    write_member(tmp_path / "two.npz", two, ids, labels, "rot")
    output = tmp_path / "concat.npz"
    concatenate_feature_files([tmp_path / "one.npz", tmp_path / "two.npz"], output)
    features, metadata = load_features(output)
    assert list(features) == ["feat5"]  # the only layer present in both
    np.testing.assert_allclose(features["feat5"], concatenate_blocks([one["feat5"], two["feat5"]]))
    assert metadata["image_ids"] == ids and metadata["labels"] == labels and metadata["split"] == "voc07_test"
    assert metadata["concatenation"]["member_dims"] == {"feat5": [3, 5]}
    assert metadata["concatenation"]["member_models"] == ["dc", "rot"]
    assert metadata["num_images"] == 3
    with pytest.raises(KeyError, match="two.npz: no layer"):
        concatenate_feature_files([tmp_path / "one.npz", tmp_path / "two.npz"], output, layers=["feat4"])


@pytest.mark.parametrize("key", ["image_ids", "labels"])
def test_members_of_other_images_are_refused(tmp_path, key):
    block = {"feat5": np.ones((2, 2))}
    write_member(tmp_path / "one.npz", block, ["a", "b"], [0, 1], "dc")
    other = {"image_ids": ["a", "b"], "labels": [0, 1]}
    other[key] = other[key][::-1]
    write_member(tmp_path / "two.npz", block, other["image_ids"], other["labels"], "rot")
    with pytest.raises(ValueError, match=rf"two.npz: its '{key}' differs from that of .*one.npz"):
        concatenate_feature_files([tmp_path / "one.npz", tmp_path / "two.npz"], tmp_path / "concat.npz")
    assert not (tmp_path / "concat.npz").exists()
