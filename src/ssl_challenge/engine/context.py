"""What the training loop hands to a method before each epoch (``PretrainingMethod.before_epoch``).

It lives with the loop that fills it in, so that the engine never imports the methods it trains (it receives a
built method, as moco's builder receives its encoder); ``methods.base`` re-exports it for the methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class EpochContext:
    """What the loop hands to ``before_epoch``.

    ``extract_features(module_fn)`` runs ``module_fn(images) -> Tensor[B, D]`` over the whole training set in
    index order, without augmentation and without gradients, and returns a ``Tensor[N, D]`` (DC's per-epoch
    extraction, ODC's memory initialisation). ``generator`` is seeded from (seed, epoch) so draws are reproducible.
    """

    epoch: int
    num_samples: int
    device: torch.device
    generator: torch.Generator
    extract_features: Callable[[Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]
