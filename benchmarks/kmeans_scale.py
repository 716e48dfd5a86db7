"""DC's per-epoch clustering at ImageNet scale: PCA 2048 -> 256 and k-means into 10,000 clusters of 1,281,167
points (see benchmarks/README.md).

Both costs grow linearly with the number of points at fixed k and dimensions (PCA: one pass of chunked covariance
products and one projection; a k-means iteration: one N x k distance pass and one centroid update), so the script
times them on subsamples of growing size, checks that the seconds per point stay flat, and extrapolates to the
full N. It prints, for each device, the measured points, the extrapolated full-scale times and the implied
minutes of clustering per DC epoch (PCA + 20 iterations + the final assignment, what ``methods.dc`` runs each
epoch), and on a GPU machine the CPU/GPU ratio measured on the same subsample in this process.

CPU times are the process's CPU seconds divided by the thread count (what the wall time would be on an idle
machine with perfect threading): on a shared machine wall times swing with the other jobs. The growth with N is
fitted as intercept + slope (PCA's eigendecomposition of a 2048 x 2048 covariance does not grow with N), and
k-means is measured only where N is well above k (faiss skips the iterations when N == k).

    python benchmarks/kmeans_scale.py              # CPU: 40k, 80k, 160k points
    python benchmarks/kmeans_scale.py --quick      # CPU: 30k, 60k points
    python benchmarks/kmeans_scale.py --gpu        # also faiss/torch on the GPU, up to the full 1.28M points
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssl_challenge.clustering.kmeans import ALL_POINTS, faiss_gpu_device
from ssl_challenge.clustering.pca import fit_pca

FULL_POINTS = 1_281_167
KMEANS_ITERATIONS = 20  # DC's reference setting


def clock(device: torch.device | None) -> float:
    """Seconds: wall time on a GPU; on the CPU the process's CPU time per thread (robust to a shared machine)."""
    if device is not None and device.type == "cuda":
        return time.perf_counter()
    return time.process_time() / torch.get_num_threads()


def gaussian_mixture(points: int, dims: int, groups: int, seed: int = 0) -> np.ndarray:
    """``float32[points, dims]``: noisy copies of ``groups`` random centres (k-means' cost does not depend on the
    data, but a mixture keeps faiss away from degenerate empty-cluster handling)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dims)).astype(np.float32)
    return centres[rng.integers(0, groups, points)] + 0.5 * rng.normal(size=(points, dims)).astype(np.float32)


def one_kmeans_iteration(points: np.ndarray, clusters: int, gpu: int | None) -> float:
    """Seconds of faiss ``Clustering.train`` with one iteration (random init, one assignment, one update)."""
    import faiss

    clustering = faiss.Clustering(points.shape[1], clusters)
    clustering.niter = 1
    clustering.seed = 0
    clustering.max_points_per_centroid = ALL_POINTS
    clustering.min_points_per_centroid = 1
    if gpu is None:
        index = faiss.IndexFlatL2(points.shape[1])
    else:
        config = faiss.GpuIndexFlatConfig()
        config.device = gpu
        index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), points.shape[1], config)
    device = None if gpu is None else torch.device("cuda", gpu)
    start = clock(device)
    clustering.train(points, index)
    return clock(device) - start


def pca_seconds(points: int, input_dims: int, output_dims: int, device: torch.device) -> float:
    """Seconds of fitting PCA ``input_dims -> output_dims`` and projecting ``points`` rows (``clustering.pca``)."""
    features = torch.rand(points, input_dims, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock(device)
    pca = fit_pca(features, output_dims)
    pca.transform(features)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock(device) - start


def measure(sizes: list[int], clusters: int, dims: int, input_dims: int, gpu: int | None) -> list[dict]:
    device = torch.device("cpu") if gpu is None else torch.device("cuda", gpu)
    rows = []
    for size in sizes:
        points = gaussian_mixture(size, dims, clusters)
        iteration = one_kmeans_iteration(points, clusters, gpu)
        pca = pca_seconds(size, input_dims, dims, device)
        rows.append({"points": size, "kmeans_iteration_s": iteration, "pca_s": pca})
        print(f"  {device.type:4s} N={size:>9,d}: one k-means iteration {iteration:8.2f} s "
              f"({iteration / size * 1e6:6.2f} us/point), PCA {input_dims}->{dims} {pca:7.2f} s "
              f"({pca / size * 1e6:6.2f} us/point)", flush=True)
    return rows


def extrapolate(rows: list[dict], key: str, points: int) -> float:
    """Intercept + slope in N fitted on the measurements (both clipped at 0), evaluated at ``points``; with one
    measurement, proportional to N."""
    sizes = np.array([row["points"] for row in rows], dtype=float)
    values = np.array([row[key] for row in rows])
    if len(rows) < 2:
        return float(values[0] / sizes[0] * points)
    slope, intercept = np.polyfit(sizes, values, 1)
    return float(max(intercept, 0.0) + max(slope, 0.0) * points)


def report(label: str, rows: list[dict], points: int) -> float:
    iteration = extrapolate(rows, "kmeans_iteration_s", points)
    pca = extrapolate(rows, "pca_s", points)
    # DC per epoch: PCA, 20 iterations, and the final nearest-centroid search (about one more assignment pass).
    epoch_minutes = (pca + (KMEANS_ITERATIONS + 1) * iteration) / 60
    measured_full = any(row["points"] >= points for row in rows)
    how = "measured" if measured_full else f"fitted a + b*N on N <= {max(r['points'] for r in rows):,d}"
    print(f"{label}: at N={points:,d} ({how}): one k-means iteration {iteration:8.1f} s, PCA {pca:7.1f} s -> "
          f"clustering per DC epoch {epoch_minutes:6.1f} min")
    return epoch_minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU sizes 30k and 60k only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="CPU subsample sizes")
    parser.add_argument("--clusters", type=int, default=10000)
    parser.add_argument("--dims", type=int, default=256, help="PCA output = k-means input dimensions")
    parser.add_argument("--input-dims", type=int, default=2048, help="the pooled ResNet-50 features")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--gpu", action="store_true", help="also time faiss and PCA on the GPU")
    args = parser.parse_args()
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    sizes = args.sizes or ([30_000, 60_000] if args.quick else [40_000, 80_000, 160_000])
    print(f"k-means k={args.clusters}, {args.dims} dims; PCA {args.input_dims}->{args.dims}; "
          f"{torch.get_num_threads()} CPU threads", flush=True)
    cpu_rows = measure(sizes, args.clusters, args.dims, args.input_dims, gpu=None)
    cpu_minutes = report("CPU", cpu_rows, FULL_POINTS)
    if args.gpu:
        gpu = faiss_gpu_device(torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
        if gpu is None:
            raise SystemExit("--gpu: no GPU faiss here (faiss-gpu build and a CUDA device are both needed)")
        gpu_rows = measure(sorted(set(sizes) | {320_000, FULL_POINTS}), args.clusters, args.dims,
                           args.input_dims, gpu=gpu)
        gpu_minutes = report("GPU", gpu_rows, FULL_POINTS)
        same = max(sizes)
        cpu_at, gpu_at = (next(r for r in rows if r["points"] == same) for rows in (cpu_rows, gpu_rows))
        print(f"CPU/GPU at N={same:,d}: k-means iteration {cpu_at['kmeans_iteration_s'] / gpu_at['kmeans_iteration_s']:.1f}x, "
              f"PCA {cpu_at['pca_s'] / gpu_at['pca_s']:.1f}x; per DC epoch {cpu_minutes / gpu_minutes:.1f}x")


if __name__ == "__main__":
    main()
