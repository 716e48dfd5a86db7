"""CODC: one member of a Collaborative Online Deep Clustering round (the project's design, docs/protocols.md).

A member is its own pretext method (ROT, DC, ODC or CLS, built with ``methods.build_method`` on the same
backbone) plus the online-clustering component of ODC (``online_clustering.OnlineClustering``: neck, head,
samples/centroids memory, small-cluster handling, re-weighted loss). What makes it collaborative is where the
component's labels start: the round's initial labels are given from outside (``labels_path``), computed by the
workflow as the k-means of the peers' concatenated, L2-normalised features from the previous round
(``pseudo_labels.cluster_concatenated``); with ``label_source: self`` (the control) they come from the member's own
features instead. The member does not know which: it only reads the file.

- Build: the backbone takes the member's previous-round weights (``initial_weights``, a ``model.pth``) when given;
  the initial labels are read once into a persistent buffer (a resumed run never needs the file's content again,
  but the file is checked at every build).
- ``before_epoch``: the base's hook; then, once (at the first epoch, when the memory is not yet initialised), the
  memory is filled with the member's own L2-normalised neck features of the whole training set (eval mode, no
  augmentation) and the given labels. From then on the labels evolve online in this memory (momentum update,
  re-assignment, small clusters, re-weighting), exactly as in ODC.
- ``epoch_indices``: the base's order (ROT/CLS: a permutation, DC: uniform over its clusters, ODC: with
  replacement). The component accepts any order, including repeated indices, so it imposes none.
- Loss: ``base loss + loss_weight * online-clustering loss``. The online part sees the loader's images as they
  are (not rotated by ROT, not mixed by CLS), so it costs one more forward pass of the batch through the backbone
  (ROT: 4B + B images; DC/ODC: 2B, the same images twice).
- ``after_step``: the base's update, then the memory's (logged with an ``online_`` prefix).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..clustering.kmeans import mixed_seed
from ..clustering.labels import load_labels
from ..models.backbones import read_model_file
from .base import EpochContext
from .codc_options import SPEC, CODCOptions
from .online_clustering import OnlineClustering, clustering_options


def load_initial_weights(backbone: nn.Module, path: str) -> None:
    """Load the backbone of a ``model.pth`` (``engine.train.backbone_file``) strictly, refusing another
    architecture by name."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"method_options.initial_weights: {path} not found")
    try:
        saved = read_model_file(path)
    except ValueError as error:  # ModelFileError: name the option that pointed at the file
        raise type(error)(f"method_options.initial_weights: {error}") from error
    if getattr(backbone, "config", None) is not None and saved.get("backbone_config") != backbone.config:
        raise ValueError(f"method_options.initial_weights: {path} holds backbone {saved.get('backbone_config')}, "
                         f"but this member's backbone is {backbone.config}")
    backbone.load_state_dict(saved["backbone"], strict=True)


class CODCMember(nn.Module):
    def __init__(self, base: nn.Module, num_samples: int, options: CODCOptions, initial_labels: torch.Tensor):
        super().__init__()
        self.options = options
        self.num_samples = num_samples
        self.base = base  # owns the backbone: registering it here too would store it twice in every checkpoint
        self.clustering = OnlineClustering(base.backbone.out_dim, num_samples, clustering_options(options))
        self.register_buffer("initial_labels", initial_labels.to(torch.int64).clone())

    @property
    def backbone(self) -> nn.Module:
        return self.base.backbone

    def parameter_groups(self, base: dict) -> list[dict]:
        head = list(self.clustering.head.parameters())
        head_ids = {id(parameter) for parameter in head}
        neck = [parameter for parameter in self.clustering.parameters() if id(parameter) not in head_ids]
        # The clustering head's targets change every iteration: no momentum, as in ODC.
        return [*self.base.parameter_groups(base), {"params": neck},
                {"params": head, "momentum": 0.0, "nesterov": False}]

    def before_epoch(self, context: EpochContext) -> None:
        # The memory's seed comes from a copy of the loop's generator, so the base draws exactly what it would
        # draw alone (its clustering seed, its head re-initialisation, its epoch order).
        untouched = torch.Generator().set_state(context.generator.get_state())
        self.base.before_epoch(context)
        if self.clustering.is_initialised:  # a later epoch, or a resumed run: the memory is in the checkpoint
            return
        features = context.extract_features(lambda images: self.clustering.embedding(self.backbone.pooled(images)))
        self.clustering.initialise(features, self.initial_labels.to(features.device),
                                   seed=mixed_seed(untouched, self.options.seed))

    def epoch_indices(self, context: EpochContext) -> torch.Tensor:
        return self.base.epoch_indices(context)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        base_loss, logs = self.base.training_step(images, indices)
        online_loss = self.clustering.loss(self.backbone.pooled(images), indices)
        loss = base_loss + self.options.loss_weight * online_loss
        return loss, {**logs, "base_loss": float(base_loss.detach()), "online_loss": float(online_loss.detach())}

    def epoch_record(self) -> dict:
        """The base's record (DC: cluster sizes, NMI) and the memory's cluster sizes (``online_`` prefix)."""
        record = dict(self.base.epoch_record())
        record["online_cluster_sizes"] = self.clustering.cluster_sizes.cpu().tolist()
        return record

    def after_step(self, indices: torch.Tensor) -> dict[str, float]:
        logs = dict(self.base.after_step(indices))
        logs.update({f"online_{key}": value for key, value in self.clustering.update(indices).items()})
        return logs


def build(backbone: nn.Module, options: dict, num_samples: int) -> CODCMember:
    from . import build_method  # the package imports this module on demand: no import cycle at load time

    options = SPEC.parse(options)
    labels = load_labels(options.labels_path, num_samples, num_clusters=options.num_clusters)
    if options.initial_weights:
        load_initial_weights(backbone, options.initial_weights)
    try:
        base = build_method(options.base_method, backbone, options.base_options, num_samples)
    except ValueError as error:  # ConfigError too: name the nested key the base method complained about
        raise type(error)(f"method_options.base_options (base_method {options.base_method!r}): {error}") from error
    return CODCMember(base, num_samples, options, torch.from_numpy(np.ascontiguousarray(labels)))
