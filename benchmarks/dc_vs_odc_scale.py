"""DC against ODC as the data grows: how each method's extra work scales with N (and k = N / 128), beside the same
training step, and the epoch-time ratio this predicts at ImageNet scale (see benchmarks/README.md).

Per epoch, both methods run N / B training steps of the same network. On top of that:
- DC (``methods.dc``), once per epoch: the pooled features of all N images (eval mode, no gradients), PCA to
  ``pca_dims``, k-means into k clusters (20 iterations and a final assignment) and the re-initialised head;
- ODC (``methods.odc``), every iteration: the memory's work after the step (``after_step``: momentum update of
  the batch's memory rows, nearest centroids, incremental cluster sizes and centroids, small-cluster handling).

Everything is measured here with the embedded network (small_resnet, 32 px, batch 128) on synthetic images and
features: the feature pass per image (linear in N by construction: measured once on a few thousand images), PCA
and k-means on N points (measured at each N), ODC's ``after_step`` at each N and k (median over iterations).
Fits: DC's clustering ~ a*N + c*N*k (PCA linear in N, a k-means iteration linear in N*k), ODC's memory per
iteration ~ m0 + m1*k. The prediction at N = 1,281,167 and k = 10,000 uses a ResNet-50 step of 0.45 s per batch
of 512 on 8 GPUs (benchmarks/README.md, "Reference anchors": "0.4-0.5 s"; not measured here) and, for the feature pass, the ratio
of a forward pass to a training step measured on the embedded network.

Times are CPU seconds per thread (``clock``), not wall seconds.

    python benchmarks/dc_vs_odc_scale.py            # N = 10k, 40k, 160k (several minutes on 2 cores)
    python benchmarks/dc_vs_odc_scale.py --quick    # N = 10k, 20k, 40k (~2-3 minutes)
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ssl_challenge.clustering.kmeans import kmeans
from ssl_challenge.clustering.pca import pca_whiten_normalise
from ssl_challenge.methods import dc, odc
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.necks import reset_linear

IMAGENET_N, IMAGENET_K, IMAGENET_BATCH = 1_281_167, 10_000, 512
RESNET50_STEP_S = 0.45  # one 512-image step on 8 GPUs (benchmarks/README.md, "Reference anchors"), not measured here
SEED_RATIO = 10 / 2.7  # the seed: DC 10 days, ODC 2.7 days on 8 GPUs
IMAGE_SIZE, BATCH = 32, 128
PCA_DIMS = 256


def clock() -> float:
    """The process's CPU seconds per thread: what the wall time would be on an idle machine (this one is shared,
    and its wall times swing with the other jobs)."""
    return time.process_time() / torch.get_num_threads()


def seconds(function, repeats: int = 1) -> float:
    """Median wall seconds of ``function()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = clock()
        function()
        times.append(clock() - start)
    return statistics.median(times)


def step_seconds(method, optimizer, images, num_samples: int, generator, after_step: bool) -> tuple[float, float]:
    """(the training step, the ``after_step`` that follows it) in seconds, one iteration."""
    indices = torch.randint(0, num_samples, (images.shape[0],), generator=generator)
    start = clock()
    loss, _ = method.training_step(images, indices)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    step = clock() - start
    start = clock()
    if after_step:
        method.after_step(indices)
    return step, clock() - start


def measure_dc(num_samples: int, clusters: int, feature_dim: int, generator) -> dict:
    """DC's clustering on ``num_samples`` synthetic pooled features: PCA + whitening + k-means (20 iterations)."""
    centres = torch.randn(clusters, feature_dim, generator=generator).relu()
    features = centres[torch.randint(0, clusters, (num_samples,), generator=generator)]
    features += 0.3 * torch.randn(num_samples, feature_dim, generator=generator).abs()
    start = clock()
    reduced = pca_whiten_normalise(features, PCA_DIMS)
    pca = clock() - start
    start = clock()
    kmeans(reduced, clusters, iterations=20, seed=0)
    return {"pca_s": pca, "kmeans_s": clock() - start}


def measure_odc(num_samples: int, clusters: int, iterations: int, generator) -> dict:
    """ODC's ``after_step`` at this N and k (median), and its step without it."""
    torch.manual_seed(0)
    method = odc.build(build_backbone({"name": "small_resnet"}), {"num_clusters": clusters}, num_samples)
    dim = method.clustering.options.neck_out_dim
    method.clustering.initialise(torch.randn(num_samples, dim, generator=generator).relu(),
                                 torch.randint(0, clusters, (num_samples,), generator=generator), seed=0)
    optimizer = torch.optim.SGD(method.parameter_groups({}), lr=0.01, momentum=0.9)
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    method.train()
    for _ in range(2):  # warm-up
        step_seconds(method, optimizer, images, num_samples, generator, True)
    steps, memories = zip(*(step_seconds(method, optimizer, images, num_samples, generator, True)
                            for _ in range(iterations)))
    return {"odc_step_s": statistics.median(steps), "odc_memory_s": statistics.median(memories)}


def measure_network(generator, feature_images: int) -> dict:
    """The DC training step (batch 128), the forward pass per image in eval mode, and the head re-initialisation."""
    torch.manual_seed(0)
    method = dc.build(build_backbone({"name": "small_resnet"}), {"num_clusters": 100}, 1000)
    method.clustered.fill_(True)
    optimizer = torch.optim.SGD(method.parameter_groups({}), lr=0.01, momentum=0.9)
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    method.train()
    for _ in range(2):
        step_seconds(method, optimizer, images, 1000, generator, False)
    step = statistics.median(step_seconds(method, optimizer, images, 1000, generator, False)[0] for _ in range(5))
    method.eval()
    batch = torch.randn(256, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    with torch.no_grad():
        method.backbone.pooled(batch)
        start = clock()
        for _ in range(max(1, feature_images // 256)):
            method.backbone.pooled(batch)
        forward_per_image = (clock() - start) / (max(1, feature_images // 256) * 256)
    head = seconds(lambda: reset_linear(method.head, 0.01, generator), repeats=5)
    return {"step_s": step, "forward_per_image_s": forward_per_image, "feature_dim": method.backbone.out_dim,
            "head_reset_s": head}


def fit(columns: list[np.ndarray], values: list[float]) -> np.ndarray:
    """Non-negative least squares by clipping (a two- or three-term model on three points)."""
    coefficients, *_ = np.linalg.lstsq(np.stack(columns, 1), np.asarray(values), rcond=None)
    return np.clip(coefficients, 0, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 10k, 20k, 40k")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--odc-iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-clustering-minutes", type=float, default=None,
                        help="DC's clustering per epoch on a GPU, as kmeans_scale.py --gpu printed it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([10_000, 20_000, 40_000] if args.quick else [10_000, 40_000, 160_000])
    generator = torch.Generator().manual_seed(0)
    network = measure_network(generator, feature_images=2048 if args.quick else 4096)
    print(f"small_resnet {IMAGE_SIZE}px, {torch.get_num_threads()} threads: training step (batch {BATCH}) "
          f"{network['step_s'] * 1000:.1f} ms, forward {network['forward_per_image_s'] * 1e6:.0f} us/image "
          f"(forward/step per image {network['forward_per_image_s'] * BATCH / network['step_s']:.2f}), "
          f"head re-initialisation {network['head_reset_s'] * 1000:.2f} ms", flush=True)

    rows = []
    header = (f"{'N':>8} {'k':>5} | {'steps/epoch':>11} {'train s':>8} | {'DC feat s':>9} {'PCA s':>6} "
              f"{'kmeans s':>8} {'DC extra':>8} | {'ODC mem ms':>10} {'ODC extra':>9} | {'DC/ODC':>6}")
    print(header)
    for size in sizes:
        clusters = max(2, size // 128)
        clustering = measure_dc(size, clusters, network["feature_dim"], generator)
        memory = measure_odc(size, clusters, args.odc_iterations, generator)
        iterations = size // BATCH
        train = iterations * network["step_s"]
        features = size * network["forward_per_image_s"]
        dc_extra = features + clustering["pca_s"] + clustering["kmeans_s"] + network["head_reset_s"]
        odc_extra = iterations * memory["odc_memory_s"]
        row = {"N": size, "k": clusters, **clustering, **memory, "features_s": features, "train_s": train,
               "dc_extra_s": dc_extra, "odc_extra_s": odc_extra, "ratio": (train + dc_extra) / (train + odc_extra)}
        rows.append(row)
        print(f"{size:>8} {clusters:>5} | {iterations:>11} {train:>8.1f} | {features:>9.1f} {clustering['pca_s']:>6.2f} "
              f"{clustering['kmeans_s']:>8.2f} {dc_extra:>8.1f} | {memory['odc_memory_s'] * 1000:>10.2f} "
              f"{odc_extra:>9.2f} | {row['ratio']:>6.2f}", flush=True)

    n = np.array([row["N"] for row in rows], dtype=float)
    k = np.array([row["k"] for row in rows], dtype=float)
    pca_per_point = fit([n], [row["pca_s"] for row in rows])[0]
    kmeans_per_nk = fit([n * k], [row["kmeans_s"] for row in rows])[0]
    memory_fit = fit([np.ones_like(k), k], [row["odc_memory_s"] for row in rows])
    growth = np.polyfit(np.log(n), np.log([row["kmeans_s"] for row in rows]), 1)[0]
    print(f"fits: PCA {pca_per_point * 1e6:.2f} us/point; k-means (20 it.) {kmeans_per_nk * 1e9:.3f} ns per N*k "
          f"(measured exponent in N at k = N/128: {growth:.2f}); ODC memory {memory_fit[0] * 1000:.2f} ms "
          f"+ {memory_fit[1] * 1e6:.3f} us per cluster per iteration")

    # ImageNet scale: ResNet-50 on 8 GPUs, 512 images per step.
    iterations = IMAGENET_N // IMAGENET_BATCH
    train = iterations * RESNET50_STEP_S
    forward_fraction = network["forward_per_image_s"] * BATCH / network["step_s"]
    features = forward_fraction * train  # a forward over every image at the step's per-image rate x fraction
    kmeans_cpu = kmeans_per_nk * IMAGENET_N * IMAGENET_K
    pca_cpu = pca_per_point * IMAGENET_N * (2048 / network["feature_dim"]) ** 2  # covariance: D^2 per point
    memory = memory_fit[0] + memory_fit[1] * IMAGENET_K
    odc_epoch = train + iterations * memory
    print(f"ImageNet scale (N={IMAGENET_N:,d}, k={IMAGENET_K:,d}, {iterations} steps of {RESNET50_STEP_S} s): "
          f"training {train / 60:.1f} min/epoch; DC feature pass {features / 60:.1f} min "
          f"(forward = {forward_fraction:.2f} of a step); PCA {pca_cpu / 60:.1f} min and k-means {kmeans_cpu / 60:.1f} min "
          f"on this machine's CPU; ODC memory {memory * 1000:.1f} ms/iteration on this CPU")
    cases = [("clustering on this CPU", pca_cpu + kmeans_cpu), ("clustering free (a lower bound)", 0.0)]
    if args.gpu_clustering_minutes is not None:
        cases.insert(1, ("clustering on a GPU (kmeans_scale.py --gpu)", 60 * args.gpu_clustering_minutes))
    # A forward pass costs about a third of forward + backward in FLOPs (ResNet-50 on a GPU); the embedded
    # network's measured fraction on the CPU is printed beside it.
    for fraction_label, fraction in (("forward = 1/3 of a step", 1 / 3), ("measured fraction", forward_fraction)):
        for label, clustering in cases:
            dc_epoch = train + fraction * train + clustering
            print(f"  predicted DC/ODC epoch time ({fraction_label}), {label}: {dc_epoch / 60:.1f} / "
                  f"{odc_epoch / 60:.1f} min = {dc_epoch / odc_epoch:.2f}x (seed: {SEED_RATIO:.1f}x per run; "
                  f"per epoch with DC 200 and ODC 440 epochs: {SEED_RATIO * 440 / 200:.1f}x)")


if __name__ == "__main__":
    main()
