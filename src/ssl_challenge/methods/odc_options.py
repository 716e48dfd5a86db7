"""ODC's options and declaration (torch-free: ``spec.py``); the method is ``odc.py``."""
from __future__ import annotations

from dataclasses import dataclass

from .online_clustering_options import OnlineClusteringOptions, check_clustering_options
from .spec import MethodSpec


@dataclass(frozen=True)
class ODCOptions(OnlineClusteringOptions):
    """The online-clustering options (num_clusters, memory_momentum, min_cluster_size, neck_hidden_dim,
    neck_out_dim, neck_dropout, init_std, reweight, reweight_power, centroid_update, centroid_update_interval,
    split_iterations) plus those of the initial clustering."""

    kmeans_iterations: int = 20  # reference 20
    seed: int = 0  # mixed with the run's seed into the k-means seed and the memory's draws


SPEC = MethodSpec(module="odc", options=ODCOptions, check=check_clustering_options, codc_pretext=True)
