"""k-means, 2-means, PCA whitening and DC's uniform-over-clusters sampler, on tiny tensors."""
from __future__ import annotations

import pytest
import torch

from ssl_challenge.clustering.kmeans import kmeans, mixed_seed, two_means
from ssl_challenge.clustering.pca import fit_pca, pca_whiten_normalise
from ssl_challenge.clustering.sampling import uniform_over_clusters

torch.set_num_threads(1)


def blobs(count_per_blob: int, centres: torch.Tensor, spread: float = 0.05, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([centre + spread * torch.randn(count_per_blob, centres.shape[1], generator=generator)
                      for centre in centres])


def test_kmeans_recovers_separable_blobs_and_is_seeded():
    centres = torch.tensor([[0.0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]])
    points = blobs(30, centres)
    result = kmeans(points, 4, iterations=20, seed=3, init="kmeans++")
    truth = torch.arange(4).repeat_interleave(30)
    # Each blob is one cluster, and the clusters are distinct: a bijection between blobs and cluster ids.
    for blob in range(4):
        assert result.assignments[truth == blob].unique().numel() == 1
    assert result.assignments.unique().numel() == 4
    for cluster in range(4):  # the centroids are the blob means
        members = points[result.assignments == cluster]
        assert torch.allclose(result.centroids[cluster], members.mean(0), atol=1e-4)
    again = kmeans(points, 4, iterations=20, seed=3, init="kmeans++")
    assert torch.equal(again.assignments, result.assignments)
    # The reference's random initialisation is seeded too, and lands in a good optimum on at least one seed.
    random_runs = [kmeans(points, 4, iterations=20, seed=seed) for seed in range(2)]
    assert torch.equal(random_runs[0].assignments, kmeans(points, 4, iterations=20, seed=0).assignments)
    best = min(run.objective for run in random_runs + [kmeans(points, 4, seed=seed) for seed in range(2, 6)])
    assert best == pytest.approx(result.objective, rel=1e-4)
    assert result.assignments.dtype == torch.int64 and result.centroids.shape == (4, 3)


def test_kmeans_refuses_too_few_points_and_nan():
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 2)


def test_two_means_separates_two_blobs():
    points = blobs(20, torch.tensor([[0.0, 0.0], [4.0, 4.0]]), seed=1)
    part = two_means(points, torch.Generator().manual_seed(0))
    assert part.dtype == torch.bool
    assert part[:20].unique().numel() == 1 and part[20:].unique().numel() == 1 and part[0] != part[20]
    again = two_means(points, torch.Generator().manual_seed(0))
    assert torch.equal(part, again)  # the same generator state gives the same split


def _sklearn_second_part(points: torch.Tensor, seed: int) -> torch.Tensor:
    """The reference's split: scikit-learn's KMeans(n_clusters=2) with k-means++ starts, 10 restarts, 20 iterations."""
    from sklearn.cluster import KMeans

    fitted = KMeans(n_clusters=2, init="k-means++", n_init=10, max_iter=20, random_state=seed).fit(points.numpy())
    return torch.from_numpy(fitted.labels_ == 1)


@pytest.mark.parametrize("seed", range(6))
def test_two_means_gives_scikit_learns_partition_on_separated_data(seed):
    generator = torch.Generator().manual_seed(100 + seed)
    dims = 2 + seed
    sizes = (7 + 5 * seed, 30 - 3 * seed)  # unequal parts
    centres = torch.randn(2, dims, generator=generator)
    centres[1] = centres[0] + 6.0 * torch.nn.functional.normalize(centres[1] - centres[0], dim=0)
    points = torch.cat([centre + torch.randn(size, dims, generator=generator) * 0.7
                        for centre, size in zip(centres, sizes)])
    ours = two_means(points, torch.Generator().manual_seed(seed))
    reference = _sklearn_second_part(points.double(), seed)
    assert torch.equal(ours, reference) or torch.equal(ours, ~reference)
    assert sorted([int(ours.sum()), int((~ours).sum())]) == sorted(sizes)


def test_two_means_restarts_avoid_the_local_minimum():
    # 1-D blobs at 0, 4 and 10 (30 points each): {0, 4} | {10} has inertia ~240, the local minimum {0} | {4, 10}
    # ~540. Lloyd from centres in the blobs at 0 and 4 ends in the local minimum; ten k-means++ restarts find the
    # global one for every generator seed, as scikit-learn does.
    points = blobs(30, torch.tensor([[0.0], [4.0], [10.0]]), spread=0.1, seed=2)
    for seed in range(8):
        ours = two_means(points, torch.Generator().manual_seed(seed))
        assert ours[:60].unique().numel() == 1 and bool(ours[0] != ours[60])
        reference = _sklearn_second_part(points.double(), seed)
        assert torch.equal(ours, reference) or torch.equal(ours, ~reference)


def test_two_means_leaves_a_part_empty_on_identical_points_like_scikit_learn():
    points = torch.ones(5, 2)
    ours = two_means(points, torch.Generator().manual_seed(0))
    assert not bool(ours.any())  # every point ties: label 0, as scikit-learn's argmin; the caller falls back
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns that it found one distinct cluster
        assert torch.equal(ours, _sklearn_second_part(points.double(), 0))
    with pytest.raises(ValueError, match="at least 2 points"):
        two_means(torch.ones(1, 2), torch.Generator().manual_seed(0))


def test_mixed_seed_depends_on_generator_and_offset():
    first = mixed_seed(torch.Generator().manual_seed(1), 0)
    assert first == mixed_seed(torch.Generator().manual_seed(1), 0)
    assert first != mixed_seed(torch.Generator().manual_seed(1), 1)
    assert first != mixed_seed(torch.Generator().manual_seed(2), 0)
    assert 0 <= first < 2**31


def correlated(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator)
    return torch.randn(count, dim, generator=generator) @ mixing + 3.0


def test_pca_whitening_gives_identity_covariance_on_kept_dims():
    features = correlated(500, 8)
    pca = fit_pca(features, 5)
    whitened = pca.transform(features).double()
    assert whitened.shape == (500, 5)
    assert torch.allclose(whitened.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-4)
    covariance = whitened.T @ whitened / 500
    assert torch.allclose(covariance, torch.eye(5, dtype=torch.float64), atol=1e-4)
    # The kept dims are the leading ones: their variances are the largest eigenvalues of the covariance.
    centred = features.double() - features.double().mean(0)
    expected = torch.linalg.eigvalsh(centred.T @ centred / 500).flip(0)[:5]
    assert torch.allclose(pca.eigenvalues, expected, rtol=1e-6)


def test_pca_whiten_normalise_unit_norms_capped_dims_and_deterministic():
    features = correlated(40, 8, seed=2)
    reduced = pca_whiten_normalise(features, 256)
    assert reduced.shape == (40, 8)  # capped at min(N, D)
    assert torch.allclose(reduced.norm(dim=1), torch.ones(40), atol=1e-5)
    assert torch.equal(reduced, pca_whiten_normalise(features.clone(), 256))
    assert pca_whiten_normalise(features[:5], 256).shape == (5, 5)
    # The component signs are fixed, so the output does not depend on the order of the rows.
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pca_whiten_normalise(features[order], 256), reduced[order], atol=1e-4)


def test_uniform_sampler_balances_clusters_and_survives_empty_ones():
    # 7 clusters (ids 0..8; 2 and 5 empty) of very different sizes: 60, 1, 9, 12, 3, 14, 1 members.
    sizes = {0: 60, 1: 1, 3: 9, 4: 12, 6: 3, 7: 14, 8: 1}
    labels = torch.cat([torch.full((size,), cluster) for cluster, size in sizes.items()])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(5))]
    count = labels.numel()  # 100: quota 100 // 7 + 1 = 15
    order = uniform_over_clusters(labels, 9, torch.Generator().manual_seed(0))
    assert order.shape == (count,) and order.dtype == torch.int64
    drawn = torch.bincount(labels[order], minlength=9)
    assert drawn[2] == 0 and drawn[5] == 0
    non_empty = drawn[list(sizes)]
    assert int(non_empty.max() - non_empty.min()) <= 1 and int(non_empty.sum()) == count
    assert set(non_empty.tolist()) <= {14, 15}
    # Clusters at least as large as the quota are drawn without replacement; smaller ones cover their members.
    big = order[labels[order] == 0]
    assert big.unique().numel() == big.numel()
    assert set(order[labels[order] == 3].tolist()) <= set(torch.nonzero(labels == 3).squeeze(1).tolist())
    assert set(order[labels[order] == 1].tolist()) == set(torch.nonzero(labels == 1).squeeze(1).tolist())
    # Seeded by the generator alone, and shuffled (not cluster after cluster).
    assert torch.equal(order, uniform_over_clusters(labels, 9, torch.Generator().manual_seed(0)))
    assert not torch.equal(order, uniform_over_clusters(labels, 9, torch.Generator().manual_seed(1)))
    assert (labels[order][1:] != labels[order][:-1]).sum() > 30


def test_uniform_sampler_single_cluster_and_bad_labels():
    order = uniform_over_clusters(torch.zeros(10, dtype=torch.int64), 3, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(10))  # quota 11, cut to N = 10 draws: no replacement needed
    with pytest.raises(ValueError, match="labels must lie"):
        uniform_over_clusters(torch.tensor([0, 3]), 3, torch.Generator())
