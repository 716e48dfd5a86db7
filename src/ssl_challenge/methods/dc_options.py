"""DC's options and declaration (torch-free: ``spec.py``); the method is ``dc.py``."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.config import ConfigError
from .spec import MethodSpec


@dataclass(frozen=True)
class DCOptions:
    num_clusters: int = 100  # reference 10000 (ImageNet)
    pca_dims: int = 256  # reference 256; capped at min(N, feature dim)
    kmeans_iterations: int = 20  # reference 20
    head_init_std: float = 0.01  # reference 0.01
    seed: int = 0  # mixed with the run's seed into each epoch's k-means seed


def check(options: DCOptions, where: str) -> None:
    """Values that cannot work whatever the data (``dc.DeepCluster`` bounds num_clusters by the samples)."""
    if options.num_clusters < 2:
        raise ConfigError(f"{where}.num_clusters: need at least 2 clusters, got {options.num_clusters}")
    if options.pca_dims < 1 or options.kmeans_iterations < 1:
        raise ConfigError(f"{where}: pca_dims ({options.pca_dims}) and kmeans_iterations "
                          f"({options.kmeans_iterations}) must be positive")


SPEC = MethodSpec(module="dc", options=DCOptions, check=check, codc_pretext=True)
