"""k-means with faiss: the clustering behind DC's pseudo-labels, ODC's initial labels and its 2-means splits.

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


def two_means(features: torch.Tensor, generator: torch.Generator, iterations: int = 20) -> torch.Tensor:
    """Split ``features`` (``Tensor[n, D]``, n >= 2) in two with Lloyd's algorithm (squared L2 distance),
    started from two distinct random points drawn with ``generator``. Returns a ``BoolTensor[n]``: True for the
    points of the second part. Runs on the features' device in float32 with no atomic reductions, so the same
    inputs and generator give the same split (ODC splits its largest cluster with it on every rank)."""
    count = features.shape[0]
    if count < 2:
        raise ValueError(f"two_means: need at least 2 points, got {count}")
    points = features.float()
    starts = torch.randperm(count, generator=generator)[:2].to(points.device)
    centres = points[starts]
    second = torch.arange(count, device=points.device) == starts[1]
    squared_norms = points.pow(2).sum(1)
    for _ in range(iterations):
        distances = squared_norms[:, None] - 2 * points @ centres.T + centres.pow(2).sum(1)[None, :]
        assignment = distances[:, 1] < distances[:, 0]
        if assignment.all() or not assignment.any():
            break  # degenerate (identical points): keep the previous split
        if torch.equal(assignment, second):
            break
        second = assignment
        centres = torch.stack([points[~second].mean(0), points[second].mean(0)])
    return second
