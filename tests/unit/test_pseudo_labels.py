"""Pseudo-labels: clustering concatenated blocks recovers separable groups; the label file round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_challenge.clustering.labels import load_labels, read_labels_file, save_labels
from ssl_challenge.stages.pseudo_labels import cluster_concatenated, labels_from_models, pooled_features


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """Equal up to a renaming of the clusters."""
    pairs = set(zip(first.tolist(), second.tolist()))
    return len(pairs) == len(set(first.tolist())) == len(set(second.tolist()))


def test_blobs_split_across_two_blocks_are_recovered():
    # Three groups of 20 points. Block one separates group 0 from {1, 2}; block two separates group 1 from
    # {0, 2}: only the concatenation tells all three apart. Block two is 1000 times larger, which the per-block
    # normalisation must neutralise. Whitening gives every kept direction unit variance, so pca_dims is the rank
    # of the signal (2: three group means span a plane); more dimensions would blow the noise up to the same size.
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 20)
    first = rng.normal(scale=0.05, size=(60, 4)) + np.where(truth[:, None] == 0, 1.0, -1.0) * np.ones(4)
    second = rng.normal(scale=0.05, size=(60, 6)) + np.where(truth[:, None] == 1, 1.0, -1.0) * np.ones(6)
    labels = cluster_concatenated([first, 1000.0 * second], num_clusters=3, pca_dims=2, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (60,)
    assert same_partition(labels, truth)
    again = cluster_concatenated([first, 1000.0 * second], num_clusters=3, pca_dims=2, seed=0)
    np.testing.assert_array_equal(labels, again)


def test_label_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "labels.npz"
    save_labels(path, np.array([0, 2, 1, 2]), {"models": ["dc", "rot"], "num_clusters": 4})
    labels, metadata = read_labels_file(path)
    assert labels.tolist() == [0, 2, 1, 2] and labels.dtype == np.int64
    assert metadata == {"models": ["dc", "rot"], "num_clusters": 4, "num_samples": 4}
    np.testing.assert_array_equal(load_labels(path, 4, num_clusters=4), labels)
    with pytest.raises(ValueError, match=r"labels.npz: 4 labels, expected one per training sample \(5\)"):
        load_labels(path, 5)
    with pytest.raises(ValueError, match=r"labels.npz: labels of 4 clusters, expected num_clusters 3"):
        load_labels(path, 4, num_clusters=3)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_labels(tmp_path / "missing.npz", 4)
    with pytest.raises(ValueError, match="out of range"):
        save_labels(tmp_path / "bad.npz", np.array([0, 3]), {"num_clusters": 3})


def test_pooled_features_are_in_index_order():
    class Source:
        def __init__(self):
            self.images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2).clone()

        def __len__(self):
            return 5

        def load_batch(self, indices, augment, generator):
            assert not augment
            return self.images[indices]

    class Backbone(torch.nn.Module):
        def pooled(self, images):
            return images.mean(dim=(2, 3))

    features = pooled_features(Backbone().train(), Source(), batch_size=2, device=torch.device("cpu"))
    np.testing.assert_array_equal(features[:, 0], np.arange(5.0))


def test_labels_from_model_files(tmp_path):
    from ssl_challenge.data.images import PreloadedImages
    from ssl_challenge.models.backbones import build_backbone

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]})
        paths.append(str(tmp_path / f"model{seed}.pth"))
        torch.save({"backbone_config": backbone.config, "backbone": backbone.state_dict()}, paths[-1])
    pixels = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    output = tmp_path / "labels.npz"
    labels = labels_from_models(paths, PreloadedImages(pixels), num_clusters=3, pca_dims=4, seed=0, batch_size=16,
                                device=torch.device("cpu"), output=output, metadata={"models": ["a", "b"]})
    stored, metadata = read_labels_file(output)
    assert stored.tolist() == labels.tolist() and labels.shape == (30,)
    assert metadata["models"] == ["a", "b"] and metadata["model_files"] == paths
    assert metadata["num_clusters"] == 3 and metadata["feature_dims"] == [8, 8]
