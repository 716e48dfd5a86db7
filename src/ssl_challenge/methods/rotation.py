"""ROT: rotation prediction (Gidaris et al. 2018).

Each image is fed at 0, 90, 180 and 270 degrees; a 4-way linear head on the pooled last-stage feature predicts
the rotation. The loss is the cross-entropy over the 4B rotated images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import PlainOrderMethod
from .rotation_options import SPEC, RotationOptions


def rotate_four_ways(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Tensor[B, C, H, W]`` (square) -> (``Tensor[4B, C, H, W]``, labels ``LongTensor[4B]``): all images at
    0 degrees, then all at 90 (counter-clockwise), 180, 270; label r means r quarter turns."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    rotated = torch.cat([torch.rot90(images, turns, dims=(2, 3)) for turns in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class RotationPrediction(PlainOrderMethod):
    def __init__(self, backbone: nn.Module, options: RotationOptions):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, 4)
        nn.init.normal_(self.head.weight, std=options.head_init_std)
        nn.init.zeros_(self.head.bias)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        rotated, labels = rotate_four_ways(images)
        logits = self.head(self.backbone.pooled(rotated))
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"rotation_accuracy": float(accuracy)}


def build(backbone: nn.Module, options: dict, num_samples: int) -> RotationPrediction:
    return RotationPrediction(backbone, SPEC.parse(options))
