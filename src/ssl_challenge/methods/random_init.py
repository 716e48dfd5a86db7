"""The ``random`` baseline: the backbone at its initialisation, never trained (config ``epochs: 0``)."""
from __future__ import annotations

import torch
from torch import nn

from .base import EpochContext
from .random_init_options import SPEC


class RandomInit(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def parameter_groups(self, base: dict) -> list[dict]:
        return [{"params": list(self.parameters())}]

    def before_epoch(self, context: EpochContext) -> None:
        raise ValueError("the random baseline is never trained: set its epochs to 0")

    def epoch_indices(self, context: EpochContext) -> torch.Tensor:
        return torch.arange(context.num_samples)

    def training_step(self, images, indices):
        raise ValueError("the random baseline is never trained: set its epochs to 0")

    def after_step(self, indices) -> dict[str, float]:
        return {}

    def epoch_record(self) -> dict:
        return {}


def build(backbone: nn.Module, options: dict, num_samples: int) -> RandomInit:
    SPEC.parse(options)
    return RandomInit(backbone)
