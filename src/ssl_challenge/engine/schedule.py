"""Learning-rate schedule: linear warm-up (per iteration), then step decay at epoch milestones."""
from __future__ import annotations

from bisect import bisect_right
from typing import Sequence


def learning_rate_factor(
    iteration: int,
    iterations_per_epoch: int,
    warmup_epochs: float,
    milestones: Sequence[int],
    gamma: float,
    warmup_ratio: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at global ``iteration`` (0-based).

    Warm-up is mmcv's linear one: over the first W = warmup_epochs * iterations_per_epoch iterations the factor
    is ``1 - (1 - i / W) * (1 - warmup_ratio)``, so iteration 0 runs at ``warmup_ratio`` (reference 0.1) and the
    ramp reaches 1 at iteration W. From epoch ``milestones[i]`` on, the rate is further multiplied by
    gamma^(i+1) (the warm-up multiplies the stepped rate, as mmcv's does).
    """
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"schedule.warmup_ratio must lie in [0, 1], got {warmup_ratio}")
    epoch = iteration // iterations_per_epoch
    factor = gamma ** bisect_right(sorted(milestones), epoch)
    warmup_iterations = warmup_epochs * iterations_per_epoch
    if iteration < warmup_iterations:
        factor *= 1.0 - (1.0 - iteration / warmup_iterations) * (1.0 - warmup_ratio)
    return factor
