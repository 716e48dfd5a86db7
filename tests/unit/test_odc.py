"""ODC: the memory's maths against hand-computed and brute-force references, the method's hooks, the exact
state round trip, the rank gather, and an interrupted training run that resumes to the same weights and memory."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_challenge.core.config import ConfigError
from ssl_challenge.methods import odc
from ssl_challenge.methods.base import EpochContext, PretrainingMethod
from ssl_challenge.methods.online_clustering import (OnlineClustering, OnlineClusteringOptions, add_per_cluster,
                                                     class_weights, momentum_update, nearest_centroids, segment_sums)
from test_dc import TinyBackbone  # a linear "backbone" on 3x4x4 images

torch.set_num_threads(1)
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ helpers
def component(num_samples=60, num_clusters=4, min_cluster_size=5, **options) -> OnlineClustering:
    torch.manual_seed(0)
    return OnlineClustering(6, num_samples, OnlineClusteringOptions(
        num_clusters=num_clusters, min_cluster_size=min_cluster_size, neck_hidden_dim=16, neck_out_dim=4, **options))


def initialised(memory: OnlineClustering, seed=0, skew=False) -> OnlineClustering:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(memory.num_samples, memory.options.neck_out_dim, generator=generator)
    labels = nearest_centroids(F.normalize(features, dim=1), torch.eye(memory.num_clusters, features.shape[1]))
    if skew:  # almost everything in cluster 0, the others nearly empty
        labels = torch.zeros_like(labels)
        labels[:3] = torch.arange(1, 4) % memory.num_clusters
    memory.initialise(features, labels, seed=seed)
    return memory


def feed(memory: OnlineClustering, indices: torch.Tensor, seed: int) -> dict[str, float]:
    """One update with random 'neck outputs' for ``indices`` (what loss() would have kept)."""
    generator = torch.Generator().manual_seed(1000 + seed)
    memory._batch_features = torch.randn(indices.numel(), memory.options.neck_out_dim, generator=generator).relu()
    return memory.update(indices)


def assert_consistent(memory: OnlineClustering, centroids_exact=True):
    """Sizes, sums and centroids equal a brute-force recomputation from the samples memory and labels."""
    sizes = torch.bincount(memory.labels, minlength=memory.num_clusters)
    assert torch.equal(memory.cluster_sizes, sizes)
    assert int(memory.cluster_sizes.sum()) == memory.num_samples
    torch.testing.assert_close(memory.samples_memory.norm(dim=1), torch.ones(memory.num_samples))
    means = torch.zeros(memory.num_clusters, memory.options.neck_out_dim, dtype=torch.float64)
    means.index_add_(0, memory.labels, memory.samples_memory.double())
    means /= sizes.clamp_min(1)[:, None]
    torch.testing.assert_close(memory.centroid_sums, means * sizes[:, None], atol=1e-9, rtol=0)
    if centroids_exact:
        torch.testing.assert_close(memory.centroids, means.float(), atol=1e-6, rtol=0)
    weights = (sizes.double() + 1e-5) ** -0.5
    torch.testing.assert_close(memory.loss_weights, (weights / weights.sum()).float())


def tiny_images(count=60, seed=0):
    return torch.randn(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def context(images, epoch=0, method=None):
    def extract(fn):
        if method is not None:
            method.eval()
        with torch.no_grad():
            features = torch.cat([fn(images[start : start + 16]) for start in range(0, len(images), 16)])
        if method is not None:
            method.train()
        return features

    return EpochContext(epoch, len(images), CPU, torch.Generator().manual_seed(epoch), extract)


ODC_OPTIONS = {"num_clusters": 4, "min_cluster_size": 5, "neck_hidden_dim": 16, "neck_out_dim": 4}


def odc_method(options=ODC_OPTIONS, num_samples=60):
    torch.manual_seed(0)
    return odc.build(TinyBackbone(out_dim=6), dict(options), num_samples)


# ------------------------------------------------------------------------------------------------ pure maths
def test_momentum_update_by_hand():
    old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    new = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    expected_first = torch.tensor([1.0, 1.0]) / math.sqrt(2)  # 0.5 [1, 0] + 0.5 [0, 1], re-normalised
    updated = momentum_update(old, new, 0.5)
    torch.testing.assert_close(updated[0], expected_first)
    mixed = 0.75 * torch.tensor([1.0, 0.0]) + 0.25 * torch.tensor([0.6, 0.8])  # new normalised first
    torch.testing.assert_close(momentum_update(old[1:], new[1:], 0.25)[0], mixed / mixed.norm())


def test_nearest_centroids_by_hand_and_centroids_are_not_renormalised():
    features = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    centroids = torch.tensor([[0.9, 0.0], [0.0, 0.5], [0.5, 0.5]])
    # products: [0.9, 0, 0.5] and [0.54, 0.4, 0.7]
    assert nearest_centroids(features, centroids).tolist() == [0, 2]
    # A long centroid beats a better-aligned short one (dot product, no normalisation).
    assert nearest_centroids(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0], [0.6, 3.0]])).tolist() == [1]


def test_class_weights_match_the_formula():
    weights = class_weights(torch.tensor([1, 4, 0, 100]))
    raw = [(1 + 1e-5) ** -0.5, (4 + 1e-5) ** -0.5, (1e-5) ** -0.5, (100 + 1e-5) ** -0.5]
    torch.testing.assert_close(weights, torch.tensor([value / sum(raw) for value in raw]))
    assert float(weights.sum()) == pytest.approx(1.0)
    raw = [(n + 1e-5) ** -1.0 for n in (2, 8)]
    torch.testing.assert_close(class_weights(torch.tensor([2, 8]), power=1.0), torch.tensor(raw) / sum(raw))


def test_segment_sums_equal_brute_force():
    labels = torch.tensor([3, 1, 3, 0, 1, 3])
    values = torch.arange(12.0).view(6, 2)
    clusters, sums = segment_sums(labels, values)
    assert clusters.tolist() == [0, 1, 3]
    expected = torch.stack([values[labels == cluster].sum(0) for cluster in (0, 1, 3)]).double()
    assert torch.equal(sums, expected)
    # Both ways of adding into per-cluster sums (in order on the CPU, reduced first on GPUs) agree.
    direct, reduced = torch.ones(4, 2, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)
    add_per_cluster(direct, labels, values, alpha=-1.0, reduce_first=False)
    add_per_cluster(reduced, labels, values, alpha=-1.0, reduce_first=True)
    assert torch.equal(direct, reduced)
    assert torch.equal(direct[2], torch.ones(2, dtype=torch.float64)) and direct[3, 0] == 1 - (0 + 4 + 10)


def test_recompute_clusters_equals_the_former_index_add_bit_for_bit_on_the_cpu(monkeypatch):
    from ssl_challenge.methods import online_clustering

    monkeypatch.setattr(online_clustering, "CHUNK_ROWS", 64)  # several chunks, as at full scale
    memory = component(num_samples=300, num_clusters=7, min_cluster_size=0)
    generator = torch.Generator().manual_seed(5)
    memory.samples_memory.copy_(F.normalize(torch.randn(300, 4, generator=generator), dim=1))
    memory.labels.copy_(torch.randint(0, 7, (300,), generator=generator))
    expected_sums = torch.zeros(7, 4, dtype=torch.float64)  # the former loop: index_add_ per chunk, in order
    for start in range(0, 300, 64):
        rows = slice(start, start + 64)
        expected_sums.index_add_(0, memory.labels[rows], memory.samples_memory[rows].double())
    expected_sizes = torch.bincount(memory.labels, minlength=7)
    memory.recompute_clusters()
    assert torch.equal(memory.centroid_sums, expected_sums)
    assert torch.equal(memory.cluster_sizes, expected_sizes)
    assert torch.equal(memory.centroids, (expected_sums / expected_sizes[:, None]).float())
    # The GPUs' way (one add per cluster and chunk, after a sorted segment sum), run on the CPU: the same sums up
    # to rounding, and the same bits every time.
    reduced_first = lambda *args, **kwargs: add_per_cluster(*args, **kwargs, reduce_first=True)  # noqa: E731
    monkeypatch.setattr(online_clustering, "add_per_cluster", reduced_first)
    memory.recompute_clusters()
    first = memory.centroid_sums.clone()
    memory.recompute_clusters()
    assert torch.equal(memory.centroid_sums, first)
    torch.testing.assert_close(first, expected_sums, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ the memory
def test_update_by_hand_momentum_then_argmax_over_centroids_before_the_update():
    memory = initialised(component(min_cluster_size=0))
    indices = torch.tensor([7, 3, 42, 3])  # 3 twice: its last copy wins
    generator = torch.Generator().manual_seed(9)
    batch = torch.randn(4, 4, generator=generator).relu() + 0.1
    old_memory, old_labels, centroids = (memory.samples_memory.clone(), memory.labels.clone(),
                                         memory.centroids.clone())
    memory._batch_features = batch
    logs = memory.update(indices)
    for sample, row in ((7, 0), (3, 3), (42, 2)):
        new = F.normalize(batch[row], dim=0)
        expected = F.normalize(0.5 * old_memory[sample] + 0.5 * new, dim=0)
        torch.testing.assert_close(memory.samples_memory[sample], expected)
        assert int(memory.labels[sample]) == int(torch.argmax(centroids @ expected))
    changed = sum(int(memory.labels[s]) != int(old_labels[s]) for s in (3, 7, 42)) / 3
    assert logs["label_change_ratio"] == pytest.approx(changed)
    untouched = torch.ones(60, dtype=torch.bool)
    untouched[[3, 7, 42]] = False
    assert torch.equal(memory.samples_memory[untouched], old_memory[untouched])
    assert_consistent(memory)


def test_centroids_stay_exact_over_many_updates():
    memory = initialised(component(num_samples=80, min_cluster_size=3))
    generator = torch.Generator().manual_seed(1)
    changes = []
    for step in range(40):
        logs = feed(memory, torch.randint(0, 80, (12,), generator=generator), step)
        changes.append(logs["label_change_ratio"])
        assert_consistent(memory)
        assert int(memory.cluster_sizes.min()) >= 3
    assert any(change > 0 for change in changes)  # the test does move samples between clusters
    assert int(memory.updates) == 40


def test_small_clusters_are_refilled_without_losing_samples():
    memory = initialised(component(num_samples=60, num_clusters=4, min_cluster_size=5), skew=True)
    assert int(memory.cluster_sizes.min()) >= 5  # handled at initialisation already
    assert_consistent(memory)
    # Force clusters below the minimum again: move members of cluster 1 and all of cluster 2 into cluster 0.
    for cluster in (1, 2):
        members = torch.nonzero(memory.labels == cluster).squeeze(1)
        keep = 2 if cluster == 1 else 0
        memory._reassign(members[keep:], torch.zeros_like(members[keep:]))
    assert sorted(memory.cluster_sizes.tolist())[:2] == [0, 2]
    handled = memory.handle_small_clusters(torch.Generator().manual_seed(0))
    assert handled == 2
    assert int(memory.cluster_sizes.min()) >= 5
    assert_consistent(memory)
    sizes = torch.bincount(memory.labels, minlength=4)
    assert torch.equal(memory.cluster_sizes, sizes) and int(sizes.sum()) == 60


def test_degenerate_split_falls_back_to_a_random_half():
    memory = component(num_samples=40, num_clusters=4, min_cluster_size=5)
    features = torch.ones(40, 4)  # all samples identical: 2-means cannot split them
    labels = torch.zeros(40, dtype=torch.int64)
    memory.initialise(features, labels)
    assert memory.cluster_sizes.tolist() == [10, 10, 10, 10]  # 40 -> 20 + 20 -> 10 + 20 + 10 -> 10 x 4
    assert_consistent(memory)


def test_split_keeps_a_small_part_and_randomises_only_an_empty_one():
    # As the reference's _partition_max_cluster: 2-means' parts stand even when one is below min_cluster_size
    # (here one outlier against 19 points, minimum 5); only an empty part (identical points) gives a random half.
    memory = component(num_samples=40, num_clusters=4, min_cluster_size=5)
    features = torch.zeros(20, 4)
    features[:, 0] = 1.0 + 0.01 * torch.arange(20.0)
    features[7] = torch.tensor([0.0, 0.0, 0.0, 5.0])
    part = memory._split(features, torch.Generator().manual_seed(0))
    assert int(part.sum()) in (1, 19) and all(bool(part[i] != part[7]) for i in range(20) if i != 7)
    halves = memory._split(torch.ones(20, 4), torch.Generator().manual_seed(0))
    assert int(halves.sum()) == 10


def test_periodic_centroid_refresh_reproduces_the_reference_schedule():
    memory = initialised(component(num_samples=80, min_cluster_size=0, centroid_update="periodic",
                                   centroid_update_interval=3))
    generator = torch.Generator().manual_seed(2)
    stale_seen = False
    for step in range(6):
        before = memory.centroids.clone()
        feed(memory, torch.randint(0, 80, (12,), generator=generator), step)
        if (step + 1) % 3 == 0:
            assert_consistent(memory)  # refreshed: exact
        else:
            assert torch.equal(memory.centroids, before)  # stale between refreshes, as the reference
            stale_seen = True
    assert stale_seen


def test_loss_is_the_weighted_cross_entropy_against_memory_labels():
    memory = initialised(component(min_cluster_size=0))
    memory.eval()  # no dropout: the loss can be recomputed
    pooled = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    indices = torch.tensor([0, 5, 9, 9, 59])
    loss = memory.loss(pooled, indices)
    logits = memory.head(memory.neck(pooled))
    targets = memory.labels[indices]
    weights = memory.loss_weights[targets]
    log_probabilities = torch.log_softmax(logits, 1)[torch.arange(5), targets]
    torch.testing.assert_close(loss, -(weights * log_probabilities).sum() / weights.sum())
    with pytest.raises(RuntimeError, match="not initialised"):
        component().loss(pooled, indices)


# ------------------------------------------------------------------------------------------------ the method
def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown key"):
        odc_method({**ODC_OPTIONS, "clusters": 3})
    with pytest.raises(ValueError, match="must not exceed the 60 training samples"):
        odc_method({**ODC_OPTIONS, "num_clusters": 13})
    with pytest.raises(ValueError, match="centroid_update"):
        odc_method({**ODC_OPTIONS, "centroid_update": "sometimes"})
    defaults = odc.ODCOptions()
    assert (defaults.memory_momentum, defaults.min_cluster_size, defaults.neck_hidden_dim, defaults.neck_out_dim,
            defaults.neck_dropout, defaults.kmeans_iterations) == (0.5, 20, 512, 256, 0.5, 20)


def train_steps(method, images, steps, seed=0):
    logs = []
    indices = method.epoch_indices(context(images, method=method))
    method.train()
    optimizer = torch.optim.SGD(method.parameter_groups({}), lr=0.1, momentum=0.9)
    for step in range(steps):
        torch.manual_seed(seed + step)
        batch = indices[step * 10 : (step + 1) * 10]
        loss, _ = method.training_step(images[batch], batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        logs.append(method.after_step(batch))
    return logs


def test_method_hooks_initialise_once_and_train():
    images = tiny_images()
    method = odc_method()
    assert isinstance(method, PretrainingMethod)
    method.before_epoch(context(images, method=method))
    assert method.clustering.is_initialised
    assert_consistent(method.clustering)
    memory_before = method.clustering.samples_memory.clone()

    def refuse(_fn):
        raise AssertionError("an initialised memory must not be re-clustered")

    method.before_epoch(EpochContext(1, 60, CPU, torch.Generator(), refuse))
    assert torch.equal(method.clustering.samples_memory, memory_before)
    order = method.epoch_indices(context(images, epoch=1))
    assert order.shape == (60,) and order.unique().numel() < 60  # with replacement
    assert torch.equal(order, method.epoch_indices(context(images, epoch=1)))
    logs = train_steps(method, images, 4)
    assert set(logs[0]) == {"label_change_ratio", "small_clusters"}
    sizes = method.epoch_record()["cluster_sizes"]  # the memory's clusters, written with the epoch's metrics
    assert sizes == torch.bincount(method.clustering.labels, minlength=4).tolist() and sum(sizes) == 60
    assert_consistent(method.clustering)
    groups = method.parameter_groups({"lr": 0.1, "momentum": 0.9})
    head = {id(parameter) for parameter in method.clustering.head.parameters()}
    assert [group.get("momentum") for group in groups] == [None, 0.0]
    assert {id(p) for p in groups[1]["params"]} == head
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in method.parameters())


def test_state_dict_round_trip_restores_the_memory_exactly():
    images = tiny_images()
    method = odc_method()
    method.before_epoch(context(images, method=method))
    train_steps(method, images, 3)
    state = {key: value.clone() for key, value in method.state_dict().items()}
    for key in ("clustering.samples_memory", "clustering.labels", "clustering.centroids", "clustering.centroid_sums",
                "clustering.cluster_sizes", "clustering.loss_weights", "clustering.initialised",
                "clustering.updates", "clustering.random_seed"):
        assert key in state
    fresh = odc_method()
    assert not fresh.clustering.is_initialised
    fresh.load_state_dict(state, strict=True)
    assert fresh.clustering.is_initialised
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    # Both continue identically (same global seed for dropout, same memory draws).
    assert train_steps(method, images, 2, seed=50) == train_steps(fresh, images, 2, seed=50)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, method.state_dict()[key]), key


# ------------------------------------------------------------------------------------------------ two ranks
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_rank_worker(rank, port, result_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    memory = initialised(component(num_samples=80, min_cluster_size=3))
    generator = torch.Generator().manual_seed(4)
    for step in range(5):
        indices = torch.randint(0, 80, (12,), generator=generator)
        features = torch.randn(12, 4, generator=torch.Generator().manual_seed(1000 + step)).relu()
        memory._batch_features = features[rank * 6 : (rank + 1) * 6]  # this rank's half of the global batch
        memory.update(indices[rank * 6 : (rank + 1) * 6])
    torch.save(memory.state_dict(), os.path.join(result_dir, f"rank{rank}.pth"))
    torch.distributed.destroy_process_group()


def test_memory_gather_over_two_ranks_matches_one_process(tmp_path):
    one = initialised(component(num_samples=80, min_cluster_size=3))  # world size 1: gather is the identity
    generator = torch.Generator().manual_seed(4)
    for step in range(5):
        feed(one, torch.randint(0, 80, (12,), generator=generator), step)
    torch.multiprocessing.spawn(two_rank_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pth")
        assert state.keys() == one.state_dict().keys()
        for key, value in one.state_dict().items():
            assert torch.equal(state[key], value), (rank, key)


# ------------------------------------------------------------------------------------------------ with the loop
@pytest.mark.parametrize("stop_at", [3, 8])  # mid-epoch 1, mid-epoch 2 (6 iterations per epoch)
def test_interrupted_odc_run_resumes_exactly(tmp_path, stop_at):
    from test_dc import assert_resume_is_exact

    options = {"num_clusters": 4, "min_cluster_size": 5, "neck_hidden_dim": 16, "neck_out_dim": 8}
    state = assert_resume_is_exact(tmp_path, "odc", options, stop_at)
    assert bool(state["clustering.initialised"]) and int(state["clustering.updates"]) == 12
