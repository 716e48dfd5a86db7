"""Track 3 (and the legacy ImageNet track): the linear probe on a frozen trunk.

One head per layer, as the reference's (OpenSelfSup linear_classification/places205/r50_multihead.py): the
layer's pooled map, a per-channel BatchNorm without affine parameters (momentum 0.1) on that map -- statistics
over the batch and the map's positions, :class:`PerChannelBatchNorm` --, then flatten and ``Linear(dim,
num_classes)`` (weights normal with std 0.01, bias 0); SGD with Nesterov momentum 0.9, weight decay 1e-4 (0 on
normalisation layers), batch 256, the learning rate x0.1 at each milestone epoch (reference: 28 epochs,
milestones 7, 14, 21). All heads train jointly in one loop: their losses are summed, and since the heads share no
parameters each one gets exactly the gradient it would get alone.

Two ways to feed the heads:

- :func:`train_linear_probe_on_features`: features extracted once (``ssl_challenge.stages.features``) and cached. This
  is the embedded default and a documented deviation from the reference: no augmentation (the SVM features'
  preprocessing, resized without a crop). The per-channel BatchNorm still applies: the cached features are the
  flattened pooled maps, and their channel layout comes from the file's pooling plan (:func:`channel_blocks_of`).
- :func:`.online_probe.train_linear_probe_online`: images go through the frozen trunk (eval mode, no gradients)
  every epoch. The reference pipelines are those of ``data.probe_images.ProbeImages``: training Resize 256,
  CenterCrop 256, RandomCrop 224 and flip; validation Resize 256, CenterCrop 224.

Both report the top-1 (%) per layer on the validation set after the last epoch, the best layer (the track
score) and one record per epoch for a JSON-lines log.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.finite import NonFiniteError, require_finite
from ..models.necks import BatchNorm1d
from ..core.numerics import numerics_record

NORMALISATION_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
                        nn.LayerNorm)

FeatureBatch = tuple[dict[str, torch.Tensor], torch.Tensor]  # ({layer: [B, dim]}, labels [B])
ChannelBlocks = Sequence[tuple[int, int]]  # (channels, dim) of each block of a flattened feature, in order
BATCHNORM_MOMENTUM = 0.1  # the reference head's SyncBN(momentum=0.1, affine=False)


@dataclass(frozen=True)
class LinearProbeConfig:
    epochs: int
    milestones: tuple[int, ...]
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    batch_size: int = 256

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.epochs < 1:
            raise ValueError(f"linear probe epochs: expected >= 1, got {self.epochs}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ValueError(f"linear probe milestones: expected increasing positive epochs, got {self.milestones}")
        if self.batch_size < 2:  # BatchNorm cannot normalise a batch of one
            raise ValueError(f"linear probe batch_size: expected >= 2, got {self.batch_size}")


# ------------------------------------------------------------------------------------------------ heads
class PerChannelBatchNorm(nn.Module):
    """BatchNorm2d(affine=False) of a pooled map, on its flattened form: ``Tensor[B, dim]`` -> ``Tensor[B, dim]``.

    ``blocks`` lists the (channels C, dims D) of consecutive blocks of the feature; each block is a C-major
    flattened map ``[B, C, D / C]`` (as ``models.pooling.pool_features`` writes it) whose every channel is
    normalised with the mean and variance over the batch and the map's positions. One block for a model's layer;
    one per member for a concatenation; ``[(dim, dim)]`` normalises every dimension on its own.
    """

    def __init__(self, blocks: ChannelBlocks, momentum: float = BATCHNORM_MOMENTUM):
        super().__init__()
        self.blocks = [(int(channels), int(dim)) for channels, dim in blocks]
        for channels, dim in self.blocks:
            if channels < 1 or dim % channels:
                raise ValueError(f"PerChannelBatchNorm: a block of {dim} dims is not {channels} channels x positions")
        self.norms = nn.ModuleList(BatchNorm1d(channels, affine=False, momentum=momentum)
                                   for channels, _ in self.blocks)
        self.dim = sum(dim for _, dim in self.blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"PerChannelBatchNorm: expected [B, {self.dim}], got {tuple(features.shape)}")
        parts = torch.split(features, [dim for _, dim in self.blocks], dim=1)
        normalised = [norm(part.reshape(len(part), channels, dim // channels)).reshape(len(part), dim)
                      for part, norm, (channels, dim) in zip(parts, self.norms, self.blocks)]
        return normalised[0] if len(normalised) == 1 else torch.cat(normalised, dim=1)


def build_probe_heads(dims: dict[str, int], num_classes: int, generator: torch.Generator,
                      channel_blocks: dict[str, ChannelBlocks] | None = None) -> nn.ModuleDict:
    """``{layer: PerChannelBatchNorm(blocks) -> Linear(dim, num_classes)}``, initialised from ``generator``.

    ``channel_blocks[layer]`` is the layer's channel layout (:class:`PerChannelBatchNorm`); a layer without one
    gets a per-dimension BatchNorm."""
    heads = nn.ModuleDict()
    channel_blocks = channel_blocks or {}
    for layer, dim in dims.items():
        linear = nn.Linear(dim, num_classes)
        nn.init.normal_(linear.weight, mean=0.0, std=0.01, generator=generator)
        nn.init.zeros_(linear.bias)
        norm = PerChannelBatchNorm(channel_blocks.get(layer, [(dim, dim)]))
        if norm.dim != dim:
            raise ValueError(f"linear probe: {layer} has {dim} dims but its channel layout "
                             f"{channel_blocks[layer]} sums to {norm.dim}")
        heads[layer] = nn.Sequential(norm, linear)
    return heads


def channel_blocks_of(metadata: dict, layers: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """The channel layout of each layer of a feature file, from its metadata: ``[(channels, dim)]`` from the
    pooling plan of a model's features, one block per member (``member_channels``, ``member_dims``) for a
    concatenation. Layers the file describes by neither are left out (a per-dimension BatchNorm then)."""
    blocks = {}
    plan = metadata.get("pooling_plan") or {}
    concatenation = metadata.get("concatenation") or {}
    for layer in layers:
        if layer in plan:
            blocks[layer] = [(plan[layer]["channels"], plan[layer]["dim"])]
        elif layer in concatenation.get("member_channels", {}):
            blocks[layer] = list(zip(concatenation["member_channels"][layer], concatenation["member_dims"][layer]))
    return blocks


def probe_parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: normalisation-layer parameters without weight decay, everything else with it."""
    normalisation, others = [], []
    for submodule in module.modules():
        own = list(submodule.parameters(recurse=False))
        (normalisation if isinstance(submodule, NORMALISATION_LAYERS) else others).extend(own)
    groups = [{"params": others, "weight_decay": weight_decay}]
    if normalisation:
        groups.append({"params": normalisation, "weight_decay": 0.0})
    return groups


# ------------------------------------------------------------------------------------------------ loops
def train_one_epoch(heads: nn.ModuleDict, optimizer: torch.optim.Optimizer,
                    batches: Iterable[FeatureBatch]) -> dict[str, float]:
    """One pass over ``batches``; returns the mean cross-entropy per layer."""
    heads.train()
    loss_sums = {layer: 0.0 for layer in heads}
    seen = 0
    for features, labels in batches:
        losses = {layer: F.cross_entropy(heads[layer](features[layer]), labels) for layer in heads}
        optimizer.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()
        for layer, loss in losses.items():
            loss_sums[layer] += loss.item() * len(labels)
        seen += len(labels)
    return {layer: total / max(seen, 1) for layer, total in loss_sums.items()}


@torch.no_grad()
def evaluate_top1(heads: nn.ModuleDict, batches: Iterable[FeatureBatch]) -> dict[str, float]:
    """Top-1 accuracy (%) per layer, BatchNorm in eval mode (running statistics)."""
    heads.eval()
    correct = {layer: 0 for layer in heads}
    seen = 0
    for features, labels in batches:
        for layer in heads:
            correct[layer] += int((heads[layer](features[layer]).argmax(dim=1) == labels).sum())
        seen += len(labels)
    if seen == 0:
        raise ValueError("linear probe: the validation set is empty")
    return {layer: 100.0 * count / seen for layer, count in correct.items()}


def fit_probe(
    heads: nn.ModuleDict,
    train_batches: Callable[[int], Iterable[FeatureBatch]],
    val_batches: Callable[[], Iterable[FeatureBatch]],
    config: LinearProbeConfig,
    evaluate_every: int = 1,
) -> tuple[dict[str, float], list[dict]]:
    """Train ``heads`` for ``config.epochs`` (``train_batches(epoch)`` yields that epoch's batches); returns the
    final top-1 per layer and the per-epoch records. Validation runs every ``evaluate_every`` epochs and last."""
    optimizer = torch.optim.SGD(probe_parameter_groups(heads, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=0.1)
    epochs_log, top1 = [], {}
    for epoch in tqdm(range(config.epochs), desc="linear probe", unit="epoch", mininterval=10):
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        record["train_loss"] = train_one_epoch(heads, optimizer, train_batches(epoch))
        diverged = [layer for layer, loss in record["train_loss"].items() if not math.isfinite(loss)]
        if diverged:  # the features are finite (checked), so the probe's own learning rate is to blame
            raise NonFiniteError(f"linear probe: the training loss of {diverged} is NaN or infinite at epoch "
                                 f"{epoch + 1}; lower evaluation.places205_linear.lr")
        scheduler.step()
        if (epoch + 1) % evaluate_every == 0 or epoch + 1 == config.epochs:
            top1 = evaluate_top1(heads, val_batches())
            record["val_top1"] = top1
        epochs_log.append(record)
    return top1, epochs_log


@torch.no_grad()
def predict_classes(heads: nn.ModuleDict, batches: Iterable[FeatureBatch], layer: str) -> np.ndarray:
    """int64 [N] predicted class of every validation sample by ``layer``'s head (argmax: the lowest index on ties,
    as :func:`evaluate_top1` counts them), in batch order."""
    heads.eval()
    predictions = [heads[layer](features[layer]).argmax(dim=1).cpu() for features, _ in batches]
    return torch.cat(predictions).numpy().astype(np.int64)


def training_batch_starts(num_samples: int, batch_size: int) -> range:
    """Batch start offsets; a trailing batch of one sample is dropped (BatchNorm cannot train on it)."""
    stop = num_samples - 1 if num_samples % batch_size == 1 and num_samples > 1 else num_samples
    return range(0, stop, batch_size)


def summarise(top1: dict[str, float], epochs_log: list[dict], config: LinearProbeConfig, seed: int,
              num_classes: int, num_train: int, num_val: int) -> dict:
    best_layer = max(top1, key=lambda layer: top1[layer])
    return {"top1": top1, "best_layer": best_layer, "best_top1": top1[best_layer], "num_classes": num_classes,
            "num_train": num_train, "num_val": num_val, "seed": seed, "config": dataclasses.asdict(config),
            "epochs_log": epochs_log, "numerics": numerics_record()}


def labels_tensor(labels, expected_count: int, what: str) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.dim() != 1 or len(labels) != expected_count:
        raise ValueError(f"{what}: expected {expected_count} labels, got shape {tuple(labels.shape)}")
    if expected_count and int(labels.min()) < 0:
        raise ValueError(f"{what}: labels must be class indices >= 0, found {int(labels.min())}")
    return labels


def count_classes(num_classes: int | None, *label_sets: torch.Tensor) -> int:
    largest = max(int(labels.max()) for labels in label_sets if len(labels))
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(f"linear probe: label {largest} found but num_classes is {num_classes}")
    return num_classes


# ------------------------------------------------------------------------------------------------ cached features
def train_linear_probe_on_features(
    train: dict[str, np.ndarray],
    train_labels,
    val: dict[str, np.ndarray],
    val_labels,
    config: LinearProbeConfig,
    device: torch.device | str,
    seed: int,
    num_classes: int | None = None,
    evaluate_every: int = 1,
    channel_blocks: dict[str, ChannelBlocks] | None = None,
) -> dict:
    """Probe cached features ``{layer: [N, dim]}`` (no augmentation); deterministic for a given ``seed``.
    ``channel_blocks``: each layer's channel layout (:func:`channel_blocks_of` of the feature file).

    Returns ``{"top1": {layer: %}, "best_layer", "best_top1", "num_classes", "num_train", "num_val", "seed",
    "config", "epochs_log": [{"epoch", "lr", "train_loss": {layer: ...}, "val_top1": {layer: %}}, ...]}``.
    """
    device = torch.device(device)
    train_tensors = _feature_tensors(train, "train")
    val_tensors = _feature_tensors(val, "val")
    if set(train_tensors) != set(val_tensors):
        raise ValueError(f"linear probe: train layers {sorted(train_tensors)} differ from val {sorted(val_tensors)}")
    for layer in train_tensors:
        if train_tensors[layer].shape[1] != val_tensors[layer].shape[1]:
            raise ValueError(f"linear probe: {layer} has {train_tensors[layer].shape[1]} dims in train but "
                             f"{val_tensors[layer].shape[1]} in val")
    num_train = len(next(iter(train_tensors.values())))
    num_val = len(next(iter(val_tensors.values())))
    train_labels = labels_tensor(train_labels, num_train, "train_labels")
    val_labels = labels_tensor(val_labels, num_val, "val_labels")
    num_classes = count_classes(num_classes, train_labels, val_labels)

    generator = torch.Generator().manual_seed(seed)
    dims = {layer: tensor.shape[1] for layer, tensor in train_tensors.items()}
    heads = build_probe_heads(dims, num_classes, generator, channel_blocks).to(device)

    def train_batches(epoch: int) -> Iterator[FeatureBatch]:
        order = torch.randperm(num_train, generator=generator)
        for start in training_batch_starts(num_train, config.batch_size):
            yield _cached_batch(train_tensors, train_labels, order[start:start + config.batch_size], device)

    def val_batches() -> Iterator[FeatureBatch]:
        for start in range(0, num_val, config.batch_size):
            indices = torch.arange(start, min(start + config.batch_size, num_val))
            yield _cached_batch(val_tensors, val_labels, indices, device)

    top1, epochs_log = fit_probe(heads, train_batches, val_batches, config, evaluate_every)
    result = summarise(top1, epochs_log, config, seed, num_classes, num_train, num_val)
    result["val_predictions"] = predict_classes(heads, val_batches(), result["best_layer"])
    return result


def _feature_tensors(features: dict[str, np.ndarray], split: str) -> dict[str, torch.Tensor]:
    if not features:
        raise ValueError(f"linear probe: no {split} features")
    for layer, array in features.items():
        require_finite(array, f"linear probe: {split} features {layer}")
    tensors = {layer: torch.as_tensor(np.asarray(array, dtype=np.float32)) for layer, array in features.items()}
    counts = {layer: tensor.shape[0] for layer, tensor in tensors.items()}
    if len(set(counts.values())) != 1 or any(tensor.dim() != 2 for tensor in tensors.values()):
        raise ValueError(f"linear probe: {split} features must be [N, dim] with one N, got "
                         f"{ {layer: tuple(tensor.shape) for layer, tensor in tensors.items()} }")
    return tensors


def _cached_batch(features: dict[str, torch.Tensor], labels: torch.Tensor, indices: torch.Tensor,
                  device: torch.device) -> FeatureBatch:
    return {layer: tensor[indices].to(device) for layer, tensor in features.items()}, labels[indices].to(device)
