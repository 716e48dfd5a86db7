"""CLS: a fresh network trained as a classifier on clustering pseudo-labels, with mixup.

The pseudo-labels come from k-means over the concatenated, L2-normalised features of already-trained models
(computed by the workflow with ``pseudo_labels.cluster_concatenated`` and passed as ``labels_path``); they are
fixed for the whole run. Each batch is mixed with a permutation of itself (Zhang et al. 2018):
``x = lam x_i + (1 - lam) x_j`` and ``loss = lam CE(y_i) + (1 - lam) CE(y_j)``, ``lam ~ Beta(alpha, alpha)``.
``lam`` and the permutation are drawn from the global torch RNG, which the training loop re-seeds from
(seed, epoch, position, rank) every iteration, so a resumed run draws the same ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..clustering.labels import load_labels, read_labels_file
from ..core.config import ConfigError
from ..models.necks import linear_head
from .base import PlainOrderMethod
from .cls_options import SPEC, ClsOptions


def mixup_cross_entropy(logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor,
                        lam: float) -> torch.Tensor:
    """``lam CE(logits, targets_a) + (1 - lam) CE(logits, targets_b)``, each CE the batch mean.
    ``logits`` ``Tensor[B, k]``, targets ``LongTensor[B]`` -> a scalar."""
    return lam * F.cross_entropy(logits, targets_a) + (1.0 - lam) * F.cross_entropy(logits, targets_b)


def mix_batch(images: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``Tensor[B, ...]`` -> (``lam images + (1 - lam) images[permutation]``, permutation ``LongTensor[B]``, lam).

    Both draws come from the global CPU RNG (the same on every device); ``alpha == 0`` returns the batch
    unchanged with lam 1 and the identity permutation."""
    if alpha <= 0:
        return images, torch.arange(images.shape[0], device=images.device), 1.0
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    permutation = torch.randperm(images.shape[0]).to(images.device)
    return lam * images + (1.0 - lam) * images[permutation], permutation, lam


class MixupClassification(PlainOrderMethod):
    """The labels never change, so the head keeps the optimiser's momentum (unlike DC/ODC heads)."""

    def __init__(self, backbone: nn.Module, options: ClsOptions, labels: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        self.options = options
        self.head = linear_head(backbone.out_dim, options.num_clusters, options.head_init_std)
        self.register_buffer("labels", labels.to(torch.int64).clone())  # persistent: checkpointed with the model

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        targets = self.labels[indices.to(self.labels.device)]
        mixed, permutation, lam = mix_batch(images, self.options.mixup_alpha)
        logits = self.head(self.backbone.pooled(mixed))
        loss = mixup_cross_entropy(logits, targets, targets[permutation], lam)
        accuracy = (logits.detach().argmax(1) == targets).float().mean()
        return loss, {"mixup_lambda": lam, "label_accuracy": float(accuracy)}


def check_label_models(options: ClsOptions) -> None:
    """When the label file records the models it was computed from, they must be the configured ones."""
    _, metadata = read_labels_file(options.labels_path)
    recorded = metadata.get("models")
    if options.label_models and recorded is not None and list(recorded) != list(options.label_models):
        raise ValueError(f"{options.labels_path}: labels computed from models {recorded}, but "
                         f"method_options.label_models is {list(options.label_models)}")


def build(backbone: nn.Module, options: dict, num_samples: int) -> MixupClassification:
    options = SPEC.parse(options)
    if not options.labels_path:
        raise ConfigError("method_options.labels_path: CLS needs a pseudo-label file (the workflow injects it)")
    labels = load_labels(options.labels_path, num_samples, num_clusters=options.num_clusters)
    check_label_models(options)
    return MixupClassification(backbone, options, torch.from_numpy(labels))
