"""Process-group helpers that fall back to one process.

Library code calls these unconditionally: with world size 1 (no process group, the CPU tests) every collective is
the identity, so nothing needs ``if distributed:`` branches. ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK;
:func:`init_from_environment` joins the group (NCCL on GPUs, gloo on the CPU).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from ..core.numerics import configure_cuda


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_environment() -> torch.device:
    """Join the torchrun process group if the environment describes one; return this process's device."""
    use_cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        configure_cuda(device)  # cuDNN / deterministic algorithms as resources.deterministic asks
        return device
    return torch.device("cpu")


def gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, ...]`` on every rank -> ``Tensor[world * B, ...]`` in rank order (equal B on every rank)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity on one process); returns the tensor."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor).div_(world_size())


def broadcast_(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """In-place broadcast from ``source`` (identity on one process); returns the tensor."""
    if world_size() > 1:
        dist.broadcast(tensor, src=source)
    return tensor


def broadcast_batchnorm_buffers_(module: torch.nn.Module, source: int = 0) -> None:
    """Every BatchNorm's running statistics and batch count in ``module`` (``nn.BatchNorm*d``, SyncBatchNorm,
    ``sync_batchnorm.GlobalBatchNorm``, per-process ones included) overwritten in place with ``source``'s; nothing
    on one process.

    DDP runs with ``broadcast_buffers=False``, so without synchronised BatchNorm each rank's running statistics
    follow its own half of the batches. The loop calls this before every feature pass and every checkpoint: the
    gathered features are then those of rank 0's network, and every rank continues from the statistics the
    checkpoint saves, so a resumed run equals an uninterrupted one. One broadcast per dtype (the statistics
    flattened together), not one per tensor."""
    if world_size() == 1:
        return
    buffers = [buffer for layer in module.modules() if isinstance(layer, _BatchNorm)
               for buffer in (layer.running_mean, layer.running_var, layer.num_batches_tracked) if buffer is not None]
    for dtype in sorted({buffer.dtype for buffer in buffers}, key=str):
        group = [buffer for buffer in buffers if buffer.dtype == dtype]
        flat = broadcast_(torch.cat([buffer.reshape(-1) for buffer in group]), source)
        for buffer, values in zip(group, flat.split([buffer.numel() for buffer in group])):
            buffer.copy_(values.view_as(buffer))


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
