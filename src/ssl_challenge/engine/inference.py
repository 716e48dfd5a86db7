"""The one loop that runs a frozen network over images: eval mode, no gradients, batches in index order.

Its callers: the training loop's per-epoch feature pass (DC's clustering, ODC's memory), the labelling step's
pooled features (``pseudo_labels``) and the feature-extraction stage (``features``). Batches come from
``data.loading.load_batches`` (worker processes when asked for); ``fn`` runs on each and ``consume`` receives
its output on the CPU with the batch's first position, so a caller can write features into a preallocated array
instead of holding a list of batches.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from ..data.loading import index_batches, load_batches

PROGRESS_BAR_FROM = 20  # batches; below this a bar is noise in the logs


def _as_float(output, on_cpu: bool):
    if isinstance(output, dict):
        return {key: _as_float(value, on_cpu) for key, value in output.items()}
    return output.float().cpu() if on_cpu else output.float()


def run_frozen(module: torch.nn.Module, fn: Callable[[torch.Tensor], object], images, batch_size: int,
               device: torch.device | str, consume: Callable[[int, object], None],
               indices: torch.Tensor | None = None, workers: int = 0, description: str = "features",
               on_cpu: bool = True) -> None:
    """``consume(position, fn(batch))`` for every batch of ``images`` (an image source, un-augmented) over
    ``indices`` (default: all, in index order), ``batch_size`` at a time; ``position`` is the batch's first
    position in ``indices``. ``fn``'s output (a tensor or a dict of tensors) arrives as float32, on the CPU
    unless ``on_cpu`` is False (the training loop gathers it across processes on the device).
    ``module`` (whose parameters ``fn`` uses) is in eval mode meanwhile; its mode is restored afterwards."""
    device = torch.device(device)
    requests = index_batches(len(images), batch_size, indices)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            position = 0
            batches = load_batches(images, requests, workers, device)
            for batch in tqdm(batches, total=len(requests), desc=description, unit="batch", mininterval=10,
                              disable=len(requests) < PROGRESS_BAR_FROM):
                consume(position, _as_float(fn(batch.to(device, non_blocking=True)), on_cpu))
                position += len(batch)
    finally:
        module.train(was_training)


def frozen_outputs(module: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int,
                   device: torch.device | str, indices: torch.Tensor | None = None, workers: int = 0,
                   description: str = "features", on_cpu: bool = True) -> torch.Tensor:
    """The outputs of :func:`run_frozen` concatenated: float32 ``[len(indices), ...]``."""
    outputs = []
    run_frozen(module, fn, images, batch_size, device, lambda _position, output: outputs.append(output), indices,
               workers, description, on_cpu)
    return torch.cat(outputs)
