"""DC: Deep Clustering (Caron et al. 2018).

At the start of every epoch: the pooled backbone features of the whole training set (eval mode, no
augmentation) are PCA-whitened to ``pca_dims`` (capped at min(N, D)), L2-normalised and clustered by k-means;
the cluster ids become the epoch's pseudo-labels; the linear head is re-initialised (normal std 0.01, bias 0);
the epoch's order is uniform over the clusters (``clustering.sampling``). The labels are a buffer, so a run
resumed mid-epoch continues with the same labels (the loop keeps the epoch's order in its checkpoint and does not
call ``before_epoch`` again).

Diagnostics: ``before_epoch`` reports the feature pass, the PCA and k-means (with its objective) on stdout (the
rule's log); ``epoch_record`` gives the cluster sizes and the NMI with the previous epoch's clustering (DeepCluster's
Fig. 2), which the loop writes with the epoch's metrics. Both clusterings are buffers, so a resumed run reports
the same record.

Reference ResNet-50 recipe (ImageNet): k = 10000, PCA 256, 20 k-means iterations, SGD lr 0.1, momentum 0.9
(head 0), weight decay 1e-5, batch 512, 200 epochs. The defaults below are the embedded scale (20k images).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..clustering.agreement import cluster_sizes, normalized_mutual_information
from ..clustering.kmeans import mixed_seed
from ..clustering.pca import pca_whiten_normalise
from ..clustering.sampling import uniform_over_clusters
from ..core.config import ConfigError
from ..engine import distributed
from ..models.necks import linear_head, reset_linear
from .base import EpochContext
from .dc_options import SPEC, DCOptions
from .shared_kmeans import kmeans_labels_on_main_process


class DeepCluster(nn.Module):
    def __init__(self, backbone: nn.Module, num_samples: int, options: DCOptions):
        super().__init__()
        if options.num_clusters > num_samples:  # the other checks: dc_options.check
            raise ConfigError(f"method_options.num_clusters: expected 2..{num_samples} (the training samples), "
                              f"got {options.num_clusters}")
        self.options = options
        self.num_samples = num_samples
        self.backbone = backbone
        self.head = linear_head(backbone.out_dim, options.num_clusters, options.head_init_std)
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.int64))
        self.register_buffer("clustered", torch.tensor(False))  # whether labels hold a clustering yet
        self.register_buffer("previous_labels", torch.zeros(num_samples, dtype=torch.int64))  # the epoch before's
        self.register_buffer("has_previous", torch.tensor(False))

    def parameter_groups(self, base: dict) -> list[dict]:
        head_ids = {id(parameter) for parameter in self.head.parameters()}
        others = [parameter for parameter in self.parameters() if id(parameter) not in head_ids]
        return [{"params": others}, {"params": list(self.head.parameters()), "momentum": 0.0, "nesterov": False}]

    def before_epoch(self, context: EpochContext) -> None:
        started = time.monotonic()
        features = context.extract_features(self.backbone.pooled)
        report(f"DC epoch {context.epoch + 1}: feature pass over {features.shape[0]} images -> "
               f"{features.shape[1]} dims in {time.monotonic() - started:.1f} s")
        kmeans_seed = mixed_seed(context.generator, self.options.seed)
        labels = kmeans_labels_on_main_process(
            features, self.options.num_clusters, self.options.kmeans_iterations, kmeans_seed,
            preprocess=self.reduce_features, report=lambda message: report(f"DC epoch {context.epoch + 1}: {message}"))
        self.previous_labels.copy_(self.labels)
        self.has_previous.copy_(self.clustered)
        self.labels.copy_(labels)
        self.clustered.fill_(True)
        reset_linear(self.head, self.options.head_init_std, context.generator)

    def reduce_features(self, features: torch.Tensor) -> torch.Tensor:
        """DC's preprocessing before k-means: PCA-whitening to ``pca_dims`` and row L2 normalisation."""
        return pca_whiten_normalise(features, self.options.pca_dims)

    def epoch_record(self) -> dict:
        """The current clustering's cluster sizes, and its NMI with the previous epoch's (None at the first)."""
        if not bool(self.clustered):
            return {}
        labels = self.labels.cpu().numpy()
        agreement = (normalized_mutual_information(self.previous_labels.cpu().numpy(), labels)
                     if bool(self.has_previous) else None)
        return {"cluster_sizes": cluster_sizes(labels, self.options.num_clusters), "nmi_previous": agreement}

    def epoch_indices(self, context: EpochContext) -> torch.Tensor:
        if not bool(self.clustered):
            raise RuntimeError("DeepCluster.epoch_indices: before_epoch has not clustered the data yet")
        return uniform_over_clusters(self.labels, self.options.num_clusters, context.generator)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.head(self.backbone.pooled(images))
        loss = F.cross_entropy(logits, self.labels[indices.to(self.labels.device)])
        return loss, {}

    def after_step(self, indices: torch.Tensor) -> dict[str, float]:
        return {}


def report(message: str) -> None:
    """A diagnostic line on the main process's stdout: the job's log (in-process, or a torchrun worker's output,
    which ``pretraining.launch_torchrun`` forwards to it)."""
    if distributed.is_main():
        print(message, flush=True)


def build(backbone: nn.Module, options: dict, num_samples: int) -> DeepCluster:
    return DeepCluster(backbone, num_samples, SPEC.parse(options))
