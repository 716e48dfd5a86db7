"""k-means on the main process, labels broadcast to every rank (DC's pseudo-labels, ODC's initial labels)."""
from __future__ import annotations

import torch

from ssl_challenge.clustering.kmeans import kmeans
from ssl_challenge.methods import shared_kmeans


def two_blobs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(20, 4, generator=generator) - 5, torch.randn(20, 4, generator=generator) + 5])


def test_one_process_gives_the_kmeans_of_the_preprocessed_features():
    features = two_blobs()
    seen = []

    def preprocess(rows):
        seen.append(rows)
        return rows * 2

    labels = shared_kmeans.kmeans_labels_on_main_process(features, 2, 10, seed=3, preprocess=preprocess)
    assert labels.dtype == torch.int64 and labels.shape == (40,)
    assert len(seen) == 1 and seen[0] is features
    assert torch.equal(labels, kmeans(features * 2, 2, 10, seed=3).assignments)
    assert len(set(labels[:20].tolist())) == 1 and set(labels[:20].tolist()) != set(labels[20:].tolist())


def test_other_ranks_do_not_cluster_and_take_the_broadcast_labels(monkeypatch):
    broadcast = torch.tensor([1, 0] * 20)

    def fail(*args, **kwargs):
        raise AssertionError("a rank other than the main one ran k-means or its preprocessing")

    def receive(tensor, source=0):
        assert source == 0
        return tensor.copy_(broadcast)

    monkeypatch.setattr(shared_kmeans.distributed, "is_main", lambda: False)
    monkeypatch.setattr(shared_kmeans.distributed, "broadcast_", receive)
    monkeypatch.setattr(shared_kmeans, "kmeans", fail)
    labels = shared_kmeans.kmeans_labels_on_main_process(two_blobs(), 2, 10, seed=3, preprocess=fail)
    assert torch.equal(labels, broadcast)
