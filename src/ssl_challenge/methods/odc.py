"""ODC: Online Deep Clustering (Zhan et al. 2020) = a backbone + the online-clustering component.

At the first epoch the whole training set goes through backbone and neck (eval mode, no augmentation), the
L2-normalised neck features are clustered by k-means, and the memory is filled with them
(``OnlineClustering.initialise``); from then on the labels evolve online, one batch at a time
(``online_clustering.py`` has the memory's algorithm). Epochs draw N samples with replacement. The memory is part
of the state_dict, so a resumed run never re-clusters.

Reference ResNet-50 recipe (ImageNet): SGD lr 0.06, momentum 0.9 (head 0), weight decay 1e-5, batch 512,
440 epochs, lr x0.4 at epoch 400; k = 10000 clusters, memory momentum 0.5, minimum cluster size 20,
re-weighting on, centroids recomputed every 10 iterations (``centroid_update: periodic`` reproduces that).
The defaults below are the embedded scale (20k images: 100 clusters).
"""
from __future__ import annotations

import torch
from torch import nn

from ..clustering.kmeans import mixed_seed
from .base import EpochContext
from .odc_options import SPEC, ODCOptions
from .online_clustering import OnlineClustering, clustering_options
from .shared_kmeans import kmeans_labels_on_main_process


class OnlineDeepClustering(nn.Module):
    def __init__(self, backbone: nn.Module, num_samples: int, options: ODCOptions):
        super().__init__()
        self.options = options
        self.num_samples = num_samples
        self.backbone = backbone
        self.clustering = OnlineClustering(backbone.out_dim, num_samples, clustering_options(options))

    def parameter_groups(self, base: dict) -> list[dict]:
        head = list(self.clustering.head.parameters())
        head_ids = {id(parameter) for parameter in head}
        others = [parameter for parameter in self.parameters() if id(parameter) not in head_ids]
        return [{"params": others}, {"params": head, "momentum": 0.0, "nesterov": False}]

    def before_epoch(self, context: EpochContext) -> None:
        if self.clustering.is_initialised:  # a later epoch, or a run resumed from a checkpoint
            return
        features = context.extract_features(lambda images: self.clustering.embedding(self.backbone.pooled(images)))
        kmeans_seed = mixed_seed(context.generator, self.options.seed)
        # every rank must start from the same labels
        labels = kmeans_labels_on_main_process(features, self.options.num_clusters, self.options.kmeans_iterations,
                                               kmeans_seed)
        self.clustering.initialise(features, labels, seed=kmeans_seed)

    def epoch_record(self) -> dict:
        """The memory's cluster sizes at the end of the epoch (the label change ratio and the small-cluster events
        are per-iteration logs: the loop averages them over the epoch)."""
        if not self.clustering.is_initialised:
            return {}
        return {"cluster_sizes": self.clustering.cluster_sizes.cpu().tolist()}

    def epoch_indices(self, context: EpochContext) -> torch.Tensor:
        return torch.randint(0, self.num_samples, (self.num_samples,), generator=context.generator)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.clustering.loss(self.backbone.pooled(images), indices), {}

    def after_step(self, indices: torch.Tensor) -> dict[str, float]:
        return self.clustering.update(indices)


def build(backbone: nn.Module, options: dict, num_samples: int) -> OnlineDeepClustering:
    return OnlineDeepClustering(backbone, num_samples, SPEC.parse(options))
