"""ODC memory cost, measured side by side in one process (see benchmarks/README.md, "Reference anchors").

1. Embedded scale: one ODC training iteration (small_resnet, 32 px, batch 128, forward + backward + SGD step +
   memory update) against the same iteration with fixed labels (no memory update): the overhead ratio.
2. ImageNet scale (N = 1,281,167, 256 dims, k = 10000, batch 512): the memory's bookkeeping per iteration
   (everything but the batch x centroids product, timed apart), ours (exact, incremental) against a
   reference-style one (a bincount over N twice per iteration, all centroids recomputed every 10 iterations with
   an argsort over N and a loop over the clusters), and the cost of one small-cluster event.

    python benchmarks/odc_memory.py            # about 2-3 minutes, < 6 GB
    python benchmarks/odc_memory.py --quick    # N / 10, k = 1000
    python benchmarks/odc_memory.py --quick --samples 20000 --clusters 100   # seconds: the tests' tiny mode
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ssl_challenge.methods import odc
from ssl_challenge.methods.online_clustering import (OnlineClustering, OnlineClusteringOptions, last_occurrences,
                                                     momentum_update, nearest_centroids)
from ssl_challenge.models.backbones import build_backbone


def milliseconds(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# ------------------------------------------------------------------------------------------------ 1. embedded
def embedded_overhead(iterations: int) -> None:
    num_samples, batch_size = 20000, 128
    torch.manual_seed(0)
    method = odc.build(build_backbone({"name": "small_resnet"}), {}, num_samples)
    generator = torch.Generator().manual_seed(0)
    dim, clusters = method.clustering.options.neck_out_dim, method.clustering.num_clusters
    method.clustering.initialise(torch.randn(num_samples, dim, generator=generator).relu(),
                                 torch.randint(0, clusters, (num_samples,), generator=generator), seed=0)
    optimizer = torch.optim.SGD(method.parameter_groups({}), lr=0.01, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator)
    method.train()

    memory_times = []

    def iteration(with_memory: bool) -> float:
        indices = torch.randint(0, num_samples, (batch_size,), generator=generator)
        start = time.perf_counter()
        loss, _ = method.training_step(images, indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if with_memory:
            memory_start = time.perf_counter()
            method.after_step(indices)
            memory_times.append(milliseconds(memory_start))
        else:
            method.clustering._batch_features = None  # fixed labels: the memory is left alone
        return milliseconds(start)

    for _ in range(3):  # warm-up (allocator, oneDNN kernels)
        iteration(True), iteration(False)
    memory_times.clear()
    with_memory, fixed = [], []
    for _ in range(iterations):  # interleaved, so load changes on the machine hit both alike
        with_memory.append(iteration(True))
        fixed.append(iteration(False))
    odc_ms, fixed_ms = statistics.median(with_memory), statistics.median(fixed)
    update_ms = statistics.median(memory_times)
    print(f"[embedded] N={num_samples} k={clusters} batch={batch_size} 32px small_resnet, median of {iterations}: "
          f"ODC iteration {odc_ms:.1f} ms, fixed labels {fixed_ms:.1f} ms, ratio {odc_ms / fixed_ms:.3f} "
          f"(noisy on a shared machine); the memory update alone {update_ms:.2f} ms, i.e. overhead ratio "
          f"{(fixed_ms + update_ms) / fixed_ms:.3f}")


# ------------------------------------------------------------------------------------------------ 2. large scale
def synthetic_bank(num_samples: int, dim: int, clusters: int, memory: torch.Tensor, generator) -> torch.Tensor:
    """Fill ``memory`` (in place, chunked) with normalised features around random cluster centres; return the
    labels. The noise level makes a few percent of the batch change cluster per iteration, as ODC does."""
    centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=1)
    labels = torch.randint(0, clusters, (num_samples,), generator=generator)
    for start in range(0, num_samples, 65536):
        chunk = labels[start : start + 65536]
        noise = torch.randn(chunk.numel(), dim, generator=generator)
        memory[start : start + 65536] = F.normalize(centres[chunk] + 0.08 * noise, dim=1)
    return labels, centres


class ReferenceStyleMemory:
    """The reference's bookkeeping, re-implemented for timing: labels and features updated per batch; a
    bincount over N for the small-cluster check and again for the loss weights every iteration; all centroids
    recomputed every ``interval`` iterations (argsort of the labels over N, a loop over the k clusters)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, clusters: int, interval: int = 10):
        self.features, self.labels, self.clusters, self.interval = features, labels, clusters, interval
        self.centroids = torch.zeros(clusters, features.shape[1])
        self.iteration = 0
        self.recompute_centroids()

    def recompute_centroids(self) -> None:
        order = torch.argsort(self.labels)
        bounds = torch.searchsorted(self.labels[order], torch.arange(self.clusters + 1)).tolist()
        for cluster in range(self.clusters):
            members = order[bounds[cluster] : bounds[cluster + 1]]
            if members.numel():
                self.centroids[cluster] = self.features[members].mean(0)

    def bookkeeping(self, indices: torch.Tensor, updated: torch.Tensor, new_labels: torch.Tensor) -> None:
        self.features[indices] = updated
        self.labels[indices] = new_labels
        self.iteration += 1
        if self.iteration % self.interval == 0:
            self.recompute_centroids()
        sizes = torch.bincount(self.labels, minlength=self.clusters)
        self.has_small_clusters = bool((sizes < 20).any())  # their handling is timed apart (as for ours)
        weights = (torch.bincount(self.labels, minlength=self.clusters).double() + 1e-5).pow(-0.5)
        self.weights = weights / weights.sum()


def large_scale(num_samples: int, clusters: int, iterations: int, reference_iterations: int) -> None:
    dim, batch_size = 256, 512
    generator = torch.Generator().manual_seed(0)
    memory = OnlineClustering(2048, num_samples, OnlineClusteringOptions(num_clusters=clusters))
    labels, centres = synthetic_bank(num_samples, dim, clusters, memory.samples_memory, generator)
    start = time.perf_counter()
    memory.initialise(memory.samples_memory, labels)  # chunked, in place: no second copy of the bank
    print(f"[large] N={num_samples} dim={dim} k={clusters} batch={batch_size}: bank "
          f"{memory.samples_memory.numel() * 4 / 2**30:.2f} GiB, initialise {milliseconds(start) / 1000:.1f} s")

    def batch():
        indices = torch.randint(0, num_samples, (batch_size,), generator=generator)
        own = torch.rand(batch_size, generator=generator) < 0.9  # 10% of the batch drift to another cluster
        targets = torch.where(own, memory.labels[indices], torch.randint(0, clusters, (batch_size,),
                                                                         generator=generator))
        return indices, centres[targets] + 0.08 * torch.randn(batch_size, dim, generator=generator)

    bookkeeping, products, changes, events = [], [], [], 0
    for step in range(iterations + 3):
        indices, features = batch()
        start = time.perf_counter()
        distinct, last = last_occurrences(indices)
        updated = momentum_update(memory.samples_memory[distinct], features[last], memory.options.memory_momentum)
        first = milliseconds(start)
        start = time.perf_counter()
        new_labels = nearest_centroids(updated, memory.centroids)
        product = milliseconds(start)
        start = time.perf_counter()
        logs = memory.commit(distinct, updated, new_labels)
        if step >= 3:  # after warm-up
            bookkeeping.append(first + milliseconds(start))
            products.append(product)
            changes.append(logs["label_change_ratio"])
            events += int(logs["small_clusters"] > 0)
    ours = statistics.mean(bookkeeping)
    print(f"[large] ours: bookkeeping {ours:.2f} ms/iteration (mean of {iterations}; median "
          f"{statistics.median(bookkeeping):.2f}, max {max(bookkeeping):.2f}), batch x centroids product "
          f"{statistics.median(products):.1f} ms, label change ratio {statistics.mean(changes):.3f}, "
          f"small-cluster events {events}")

    # The state must equal a brute-force recomputation after all those updates.
    sizes = torch.bincount(memory.labels, minlength=clusters)
    sums = torch.zeros(clusters, dim, dtype=torch.float64).index_add_(0, memory.labels, memory.samples_memory.double())
    exact_sizes = torch.equal(sizes, memory.cluster_sizes)
    centroid_error = float((sums / sizes.clamp_min(1)[:, None] - memory.centroids.double()).abs().max())
    print(f"[large] brute-force check: sizes equal {exact_sizes}, max centroid error {centroid_error:.2e}")
    del sums

    # One small-cluster event: empty a cluster below the minimum, time its handling (members moved, 2-means split).
    victim = int(torch.argmin(memory.cluster_sizes))
    members = torch.nonzero(memory.labels == victim).squeeze(1)
    keep = memory.options.min_cluster_size - 1
    memory._reassign(members[keep:], torch.full_like(members[keep:], (victim + 1) % clusters))
    start = time.perf_counter()
    handled = memory.handle_small_clusters(torch.Generator().manual_seed(1))
    event = milliseconds(start)
    print(f"[large] one small-cluster event ({handled} cluster, {keep} members moved, largest split): {event:.1f} ms")

    reference = ReferenceStyleMemory(memory.samples_memory.clone(), memory.labels.clone(), clusters)
    reference_times = []
    for step in range(reference_iterations):
        indices, features = batch()
        start = time.perf_counter()
        distinct, last = last_occurrences(indices)
        updated = momentum_update(reference.features[distinct], features[last], 0.5)
        first = milliseconds(start)
        new_labels = nearest_centroids(updated, reference.centroids)
        start = time.perf_counter()
        reference.bookkeeping(distinct, updated, new_labels)
        reference_times.append(first + milliseconds(start))
    theirs = statistics.mean(reference_times)
    print(f"[large] reference-style: bookkeeping {theirs:.1f} ms/iteration (mean of {reference_iterations}, "
          f"including {reference_iterations // 10} full centroid recomputations of "
          f"{max(reference_times):.0f} ms)")
    print(f"[large] ratio reference-style / ours: {theirs / ours:.1f}x; ours {ours:.2f} ms vs target <= 5 ms")
    if num_samples == 1_281_167 and clusters == 10_000:
        # The reference anchor (benchmarks/README.md) measured the same product at ~58 ms on one core of an unloaded machine like this one.
        slowdown = statistics.median(products) / 58.0
        print(f"[large] this machine ran the product {slowdown:.2f}x slower than the reference anchor; "
              f"bookkeeping scaled to the anchor: {ours / slowdown:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N / 10 and k = 1000 for the large-scale part")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the target is for one core)")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--samples", type=int, default=None, help="N of the large-scale part (default by --quick)")
    parser.add_argument("--clusters", type=int, default=None, help="k of the large-scale part (default by --quick)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if not arguments.skip_embedded:
        embedded_overhead(iterations=10 if arguments.quick else 20)
    samples, clusters = (128_117, 1000) if arguments.quick else (1_281_167, 10_000)
    iterations, reference_iterations = (50, 20) if arguments.quick else (100, 30)
    large_scale(arguments.samples or samples, arguments.clusters or clusters, iterations, reference_iterations)


if __name__ == "__main__":
    main()
