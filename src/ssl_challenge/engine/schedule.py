"""Learning-rate schedule: linear warm-up (per iteration), then step decay at epoch milestones."""
from __future__ import annotations

from bisect import bisect_right
from typing import Sequence


def learning_rate_factor(
    iteration: int, iterations_per_epoch: int, warmup_epochs: float, milestones: Sequence[int], gamma: float
) -> float:
    """Multiplier of the base learning rate at global ``iteration`` (0-based).

    Warm-up ramps linearly from 1/W to 1 over the first W = warmup_epochs * iterations_per_epoch iterations (the
    first step already moves, as in the reference warm-up); from epoch ``milestones[i]`` on, the rate is further
    multiplied by gamma^(i+1).
    """
    if iterations_per_epoch < 1:
        raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
    epoch = iteration // iterations_per_epoch
    factor = gamma ** bisect_right(sorted(milestones), epoch)
    warmup_iterations = warmup_epochs * iterations_per_epoch
    if iteration < warmup_iterations:
        factor *= (iteration + 1) / warmup_iterations
    return factor
