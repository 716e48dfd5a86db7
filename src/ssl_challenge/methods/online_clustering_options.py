"""The options of ODC's online-clustering component (``online_clustering.py``), which ODC's and CODC's options
extend; torch-free, like every method's options module (``spec.py``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.config import ConfigError

CENTROID_UPDATE_MODES = ("incremental", "periodic")


@dataclass(frozen=True)
class OnlineClusteringOptions:
    """The component's options (ODC's and CODC's method options include them). Reference values in comments."""

    num_clusters: int = 100  # reference 10000 (ImageNet); about N / 200 at the embedded scale
    memory_momentum: float = 0.5  # m in f <- normalise((1 - m) f_old + m f_new); reference 0.5
    min_cluster_size: int = 20  # reference 20; 0 disables the small-cluster handling
    neck_hidden_dim: int = 512  # reference 512
    neck_out_dim: int = 256  # reference 256: the memory's feature dimension
    neck_dropout: float = 0.5  # reference 0.5
    neck_bn_momentum: float = 0.1  # running-statistics momentum of the neck's BatchNorm; reference 0.001
    neck_sync_bn: bool = True  # under the model's sync_bn the neck's BatchNorm is synchronised too; reference False
    init_std: float = 0.01  # normal initialisation of the head (the neck is Kaiming, fan_in); reference 0.01
    reweight: bool = True  # per-class loss weights from the cluster sizes; reference True
    reweight_power: float = 0.5  # w_c ~ (n_c + 1e-5)^-power; reference 0.5
    centroid_update: str = "incremental"  # exact every iteration; "periodic": the reference's full refresh
    centroid_update_interval: int = 10  # iterations between refreshes in "periodic" mode; reference 10
    split_iterations: int = 20  # 2-means iterations when a cluster is split


def clustering_options(options: OnlineClusteringOptions) -> OnlineClusteringOptions:
    """The component's own options out of a method's options that extend them (``ODCOptions``, ``CODCOptions``)."""
    names = OnlineClusteringOptions.__dataclass_fields__
    return OnlineClusteringOptions(**{key: value for key, value in asdict(options).items() if key in names})


def check_clustering_options(options: OnlineClusteringOptions, where: str = "method_options") -> None:
    """Raise ``ConfigError`` naming the option when a value cannot work whatever the data (the bound that needs
    the number of training samples is ``online_clustering.check_options``)."""
    if options.num_clusters < 2:
        raise ConfigError(f"{where}.num_clusters: need at least 2 clusters, got {options.num_clusters}")
    if options.min_cluster_size < 0:
        raise ConfigError(f"{where}.min_cluster_size: expected >= 0, got {options.min_cluster_size}")
    if not 0.0 < options.memory_momentum <= 1.0:
        raise ConfigError(f"{where}.memory_momentum: expected 0 < m <= 1, got {options.memory_momentum}")
    if not 0.0 < options.neck_bn_momentum <= 1.0:
        raise ConfigError(f"{where}.neck_bn_momentum: expected 0 < momentum <= 1, got {options.neck_bn_momentum}")
    if options.centroid_update not in CENTROID_UPDATE_MODES:
        raise ConfigError(f"{where}.centroid_update: expected one of {CENTROID_UPDATE_MODES}, "
                          f"got {options.centroid_update!r}")
    if options.centroid_update_interval < 1:
        raise ConfigError(f"{where}.centroid_update_interval: expected >= 1, got {options.centroid_update_interval}")
