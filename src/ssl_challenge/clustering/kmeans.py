"""k-means with faiss: the clustering behind DC's pseudo-labels and ODC's initial labels; and ODC's 2-means
splits (:func:`two_means`, in torch: scikit-learn's KMeans(n_clusters=2) as the reference uses it).

The reference (facebookresearch/deepcluster) runs faiss k-means with 20 iterations on all points, then assigns
every point to its nearest centroid. We do the same; the points stay in float32. The index runs on a GPU
whenever one can (:func:`faiss_gpu_device`: a faiss GPU build that sees a GPU, and torch sees CUDA), whatever
device the features live on, and on the CPU otherwise: faiss-cpu (the local environment) and CPU-only machines
never touch CUDA, and their results are unchanged. GPU nodes install faiss-gpu (``envs/pipeline-gpu.yaml``,
``requirements-gpu.txt``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# faiss subsamples to max_points_per_centroid * k points by default (256 per centroid); DC clusters all of them.
ALL_POINTS = 1 << 30


@dataclass(frozen=True)
class KMeansResult:
    assignments: torch.Tensor  # LongTensor[N]: the nearest centroid of each point
    centroids: torch.Tensor  # Tensor[k, D] float32
    objective: float  # the sum of squared distances to the assigned centroids, after the last iteration


INIT_METHODS = ("random", "kmeans++")


def kmeans(features: torch.Tensor, num_clusters: int, iterations: int = 20, seed: int = 0, init: str = "random",
           use_gpu: bool | None = None, verbose: bool = False) -> KMeansResult:
    """Cluster ``features`` (``Tensor[N, D]``, any float dtype, any device) into ``num_clusters`` groups.

    Returns assignments and centroids on the device of ``features``. ``use_gpu``: None picks a GPU when there
    is one (:func:`faiss_gpu_device`), True demands one, False keeps faiss on the CPU. ``seed`` fixes faiss's
    random initialisation (the same seed and points give the same result); ``init`` is faiss's default "random"
    (k distinct points, the reference's choice) or "kmeans++" (D^2 sampling, more robust on few, well separated
    groups).
    Raises ``ValueError`` when there are fewer points than clusters or the features are not finite.
    """
    import faiss  # imported here: only the clustering methods need it

    if features.dim() != 2:
        raise ValueError(f"kmeans: expected features [N, D], got shape {tuple(features.shape)}")
    count, dim = features.shape
    if init not in INIT_METHODS:
        raise ValueError(f"kmeans: init must be one of {INIT_METHODS}, got {init!r}")
    if not 1 <= num_clusters <= count:
        raise ValueError(f"kmeans: need 1 <= num_clusters ({num_clusters}) <= number of points ({count})")
    points = np.ascontiguousarray(features.detach().to("cpu", torch.float32).numpy())
    if not np.isfinite(points).all():
        raise ValueError("kmeans: the features contain NaN or infinite values")

    clustering = faiss.Clustering(dim, num_clusters)
    clustering.niter = int(iterations)
    clustering.seed = int(seed) & 0x7FFFFFFF  # a C int
    clustering.max_points_per_centroid = ALL_POINTS
    clustering.min_points_per_centroid = 1  # small sets (tests, 2-means splits) are legitimate: no warning
    clustering.verbose = verbose
    if init == "kmeans++":
        clustering.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    index = _flat_index(faiss, dim, features.device, use_gpu)
    clustering.train(points, index)
    distances, nearest = index.search(points, 1)
    centroids = faiss.vector_to_array(clustering.centroids).reshape(num_clusters, dim)
    return KMeansResult(
        assignments=torch.from_numpy(nearest[:, 0].astype(np.int64)).to(features.device),
        centroids=torch.from_numpy(centroids.copy()).to(features.device),
        objective=float(distances.astype(np.float64).sum()),
    )


def mixed_seed(generator: torch.Generator, offset: int) -> int:
    """A 31-bit k-means seed from a generator (the loop's, seeded from the run's seed and epoch) and a method's
    own ``seed`` option."""
    drawn = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return int(np.random.SeedSequence([drawn, int(offset)]).generate_state(1)[0] & 0x7FFFFFFF)


def faiss_gpu_device(device: torch.device, use_gpu: bool | None = None, faiss=None) -> int | None:
    """The GPU faiss should run on for features on ``device``, or None for the CPU.

    A GPU needs all of: a faiss GPU build (``GpuIndexFlatL2``; faiss-cpu has none), ``faiss.get_num_gpus() > 0``,
    and CUDA in torch. It is the features' GPU when they live on one, else torch's current device (a DDP rank's
    own GPU). ``use_gpu`` None: a GPU when there is one; False: the CPU; True: a GPU or ``RuntimeError`` naming
    what is missing. ``faiss``: the module (tests pass a stand-in; default: import it)."""
    if use_gpu is False:
        return None
    if faiss is None:
        import faiss
    missing = []
    if not hasattr(faiss, "GpuIndexFlatL2"):
        missing.append("this faiss is a CPU-only build (install faiss-gpu: envs/pipeline-gpu.yaml)")
    elif faiss.get_num_gpus() < 1:
        missing.append("faiss sees no GPU")
    if not torch.cuda.is_available():
        missing.append("torch sees no CUDA device")
    if missing:
        if use_gpu:
            raise RuntimeError(f"kmeans: use_gpu=True but {'; '.join(missing)}")
        return None
    if device.type == "cuda" and device.index is not None:
        return device.index
    return torch.cuda.current_device()


def _flat_index(faiss, dim: int, device: torch.device, use_gpu: bool | None):
    """An exact L2 index, on the GPU :func:`faiss_gpu_device` picks, else on the CPU."""
    gpu = faiss_gpu_device(device, use_gpu, faiss)
    if gpu is None:
        return faiss.IndexFlatL2(dim)
    config = faiss.GpuIndexFlatConfig()
    config.device = gpu
    return faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), dim, config)


SPLIT_RESTARTS = 10  # the reference's KMeans(n_clusters=2): scikit-learn's n_init=10 k-means++ restarts
SPLIT_TOLERANCE = 1e-4  # scikit-learn's tol: relative to the mean per-dimension variance of the points


def two_means(features: torch.Tensor, generator: torch.Generator, iterations: int = 20,
              restarts: int = SPLIT_RESTARTS, tolerance: float = SPLIT_TOLERANCE) -> torch.Tensor:
    """Split ``features`` (``Tensor[n, D]``, n >= 2) in two as the reference's scikit-learn
    ``KMeans(n_clusters=2, init="k-means++", n_init=restarts, max_iter=iterations, tol=tolerance)``: ``restarts``
    runs of Lloyd's algorithm (squared L2 distance), each from greedy k-means++ starts (a uniform first centre,
    then the best of two D^2-sampled candidates), each stopping when no label changes or the centres move by at
    most ``tolerance`` x the mean per-dimension variance in total; the run with the lowest inertia wins.

    Returns a ``BoolTensor[n]``: True for the points of the second part (label 1; a tie goes to the first
    centre). Either part may be empty (all points identical): the caller decides what to do then. Every draw
    comes from ``generator`` (CPU), the arithmetic is float64 on the features' device with no atomic
    reductions, so the same inputs and generator give the same split on every rank and after a resume."""
    count = features.shape[0]
    if count < 2:
        raise ValueError(f"two_means: need at least 2 points, got {count}")
    if restarts < 1 or iterations < 1:
        raise ValueError(f"two_means: need restarts >= 1 and iterations >= 1, got {restarts}, {iterations}")
    points = features.detach().double()
    squared_norms = points.pow(2).sum(1)
    threshold = float(points.var(0, unbiased=False).mean()) * tolerance
    best, best_inertia = None, float("inf")
    for _ in range(restarts):
        second, inertia = _lloyd_two(points, squared_norms, _kmeanspp_two(points, squared_norms, generator),
                                     iterations, threshold)
        if best is None or (inertia < best_inertia and not _same_partition(second, best)):
            best, best_inertia = second, inertia
    return best


def _squared_distances(points: torch.Tensor, squared_norms: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``Tensor[n, c]``: squared L2 distances of the points to the centres, clamped at 0 (rounding)."""
    return (squared_norms[:, None] - 2 * points @ centres.T + centres.pow(2).sum(1)[None, :]).clamp_min_(0)


def _kmeanspp_two(points: torch.Tensor, squared_norms: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ starts for two centres (scikit-learn's ``2 + int(log(2)) = 2`` local trials)."""
    count = points.shape[0]
    first = int(torch.randint(count, (1,), generator=generator))
    closest = _squared_distances(points, squared_norms, points[first:first + 1])[:, 0]
    potential = closest.sum()
    draws = torch.rand(2, generator=generator, dtype=torch.float64).to(points.device) * potential
    candidates = torch.searchsorted(torch.cumsum(closest, 0), draws).clamp_max_(count - 1)
    candidate_potentials = torch.minimum(closest[:, None],
                                         _squared_distances(points, squared_norms, points[candidates])).sum(0)
    chosen = candidates[int(torch.argmin(candidate_potentials))]
    return torch.stack([points[first], points[chosen]])


def _lloyd_two(points: torch.Tensor, squared_norms: torch.Tensor, centres: torch.Tensor, iterations: int,
               threshold: float) -> tuple[torch.Tensor, float]:
    """Lloyd's iterations from ``centres`` (scikit-learn's order: assign, move the centres, stop on unchanged
    labels or a total squared shift <= ``threshold``; without strict convergence the labels are assigned once
    more to the final centres). Returns (label-1 mask, inertia)."""
    previous = None
    converged = False
    for _ in range(iterations):
        distances = _squared_distances(points, squared_norms, centres)
        second = distances[:, 1] < distances[:, 0]
        new_centres = centres.clone()
        kept = torch.ones_like(second)
        own = distances.gather(1, second.long()[:, None])[:, 0]
        # An empty part (scikit-learn's relocation): its centre moves to the point farthest from its own centre,
        # which leaves the other part's mean; nothing moves when every point sits on its centre.
        if (bool(second.all()) or not bool(second.any())) and float(own.max()) > 0:
            farthest = int(torch.argmax(own))
            new_centres[0 if bool(second.all()) else 1] = points[farthest]
            kept[farthest] = False
        masks = torch.stack([~second & kept, second & kept]).to(points.dtype)
        sizes = masks.sum(1)
        means = (masks @ points) / sizes.clamp_min(1)[:, None]
        new_centres = torch.where(sizes[:, None] > 0, means, new_centres)
        shift = float((new_centres - centres).pow(2).sum())
        centres = new_centres
        if previous is not None and torch.equal(second, previous):
            converged = True
            break
        if shift <= threshold:
            break
        previous = second
    if not converged:
        distances = _squared_distances(points, squared_norms, centres)
        second = distances[:, 1] < distances[:, 0]
    inertia = float(torch.where(second, distances[:, 1], distances[:, 0]).sum())
    return second, inertia


def _same_partition(first: torch.Tensor, second: torch.Tensor) -> bool:
    return bool(torch.equal(first, second) or torch.equal(first, ~second))
