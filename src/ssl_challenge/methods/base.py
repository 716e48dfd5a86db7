"""The common interface of pretraining methods.

A method is one ``torch.nn.Module`` that receives its backbone, owns its heads, loss and state (memories,
pseudo-labels), and exposes the hooks of :class:`PretrainingMethod`, every one of which the generic training loop
(``ssl_challenge.engine.train``) calls. Everything a method needs to continue exactly after a restart lives in its
``state_dict`` (register tensors as buffers, or override ``extra_state``) -- the loop checkpoints it with the model.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..engine.context import EpochContext  # defined with the loop that fills it in

__all__ = ["EpochContext", "PlainOrderMethod", "PretrainingMethod"]


@runtime_checkable
class PretrainingMethod(Protocol):
    """Hooks called by the training loop, in this order per epoch:

    1. ``before_epoch(context)``  -- e.g. DC clusters here; ODC initialises its memory at the first epoch.
    2. ``epoch_indices(context)`` -> ``LongTensor[L]``: the sample order of the epoch (default: a permutation;
       DC: uniform over clusters; ODC: with replacement). The loop cuts it into batches.
    3. per batch: ``training_step(images[B,C,H,W], indices[B])`` -> (loss, logs); the loop runs backward and the
       optimiser step, then calls ``after_step(indices)`` (memory updates that must follow the step).
    4. ``epoch_record()`` -> what the epoch's metrics line adds (DC, ODC: cluster sizes, NMI; others: nothing).

    Before the first epoch the loop builds the optimiser from ``parameter_groups``; it writes ``backbone`` (the
    network the tracks evaluate) to the model file. Besides these, only ``torch.nn.Module``'s own methods are used.
    """

    backbone: torch.nn.Module

    def parameter_groups(self, base: dict) -> list[dict]:
        """Optimiser parameter groups; ``base`` holds lr/momentum/weight_decay. Heads may set momentum 0."""
        ...

    def before_epoch(self, context: EpochContext) -> None: ...

    def epoch_indices(self, context: EpochContext) -> torch.Tensor: ...

    def training_step(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...

    def after_step(self, indices: torch.Tensor) -> dict[str, float]: ...

    def epoch_record(self) -> dict: ...


class PlainOrderMethod(torch.nn.Module):
    """Defaults for methods whose state changes only through the optimiser (ROT, CLS, random): every parameter
    in one group, nothing to do before an epoch, a random permutation per epoch, nothing after a step, nothing
    to record after an epoch."""

    def parameter_groups(self, base: dict) -> list[dict]:
        return [{"params": list(self.parameters())}]

    def before_epoch(self, context: EpochContext) -> None:
        pass

    def epoch_indices(self, context: EpochContext) -> torch.Tensor:
        return torch.randperm(context.num_samples, generator=context.generator)

    def after_step(self, indices: torch.Tensor) -> dict[str, float]:
        return {}

    def epoch_record(self) -> dict:
        return {}
