"""DC's epoch order: uniform over the clusters, so that large clusters do not dominate the pseudo-label task.

As in the reference (deepcluster's UnifLabelSampler) every non-empty cluster gets a quota of ``N // K + 1``
draws (K = number of non-empty clusters), without replacement when the cluster has at least that many members
and with replacement otherwise; the draws are shuffled and the epoch has N of them. Where the reference cuts the
shuffled list at N, dropping surplus draws at random, we drop exactly one draw from each of randomly chosen
clusters, so every cluster appears ``N // K`` or ``N // K + 1`` times: the same expected counts, never more
than one apart. Empty clusters are simply skipped.
"""
from __future__ import annotations

import torch


def uniform_over_clusters(labels: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """``labels`` ``LongTensor[N]`` in ``[0, num_clusters)`` -> sample indices ``LongTensor[N]`` (CPU), drawn with
    ``generator`` only, so the same generator state gives the same order."""
    labels = labels.detach().to("cpu", torch.int64)
    count = labels.numel()
    if count == 0:
        return torch.empty(0, dtype=torch.int64)
    if labels.min() < 0 or labels.max() >= num_clusters:
        raise ValueError(f"uniform_over_clusters: labels must lie in [0, {num_clusters}), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")
    sizes = torch.bincount(labels, minlength=num_clusters)
    clusters = torch.nonzero(sizes).squeeze(1)  # the non-empty ones
    quota = count // clusters.numel() + 1
    # Which clusters give up one draw so that the total is exactly N.
    surplus = quota * clusters.numel() - count
    draws_per_cluster = torch.full((clusters.numel(),), quota, dtype=torch.int64)
    draws_per_cluster[torch.randperm(clusters.numel(), generator=generator)[:surplus]] -= 1

    # Members of each cluster in a random order, cluster after cluster: a random permutation, stably sorted by label.
    shuffled = torch.randperm(count, generator=generator)
    members = shuffled[torch.argsort(labels[shuffled], stable=True)]
    first_member = torch.cumsum(sizes, 0)[clusters] - sizes[clusters]

    cluster_of_draw = torch.repeat_interleave(torch.arange(clusters.numel()), draws_per_cluster)
    rank_in_cluster = torch.arange(cluster_of_draw.numel()) - torch.repeat_interleave(
        torch.cumsum(draws_per_cluster, 0) - draws_per_cluster, draws_per_cluster)
    cluster_sizes = sizes[clusters][cluster_of_draw]
    # Clusters with at least as many members as draws: the first members of their random order (no
    # replacement); smaller ones: uniform draws with replacement.
    with_replacement = cluster_sizes < draws_per_cluster[cluster_of_draw]
    random_offsets = (torch.rand(cluster_of_draw.numel(), generator=generator, dtype=torch.float64)
                      * cluster_sizes).long().clamp_(max=cluster_sizes - 1)
    offsets = torch.where(with_replacement, random_offsets, rank_in_cluster)
    draws = members[first_member[cluster_of_draw] + offsets]
    return draws[torch.randperm(draws.numel(), generator=generator)]
