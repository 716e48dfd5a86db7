"""Synchronised BatchNorm: training-mode statistics over the global batch of all processes.

The reference trains ROT and ODC with SyncBN (each GPU sees 1/8 of the batch; per-GPU statistics would be noisier
and, for ODC's neck, differ between ranks). ``torch.nn.SyncBatchNorm`` runs on CUDA only, so
:func:`convert_sync_batchnorm` picks it on GPUs and :class:`GlobalBatchNorm` (the same maths, collectives through
any backend, gloo included) elsewhere: the CPU tests exercise the CPU path against one process holding the whole
batch. On one process (or when ``sync`` is off) nothing is converted. A module with ``sync_batchnorm = False``
(ODC's neck with ``neck_sync_bn: false``, per GPU as the reference's) keeps its BatchNorm per process. Per-process
running statistics drift apart; the training loop sets them to rank 0's before each feature pass and each
checkpoint (``distributed.broadcast_batchnorm_buffers_``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules.batchnorm import _BatchNorm


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over ``[B, C, *]`` whose training statistics are those of the batch of every process together.

    Mean and biased variance come from two all-reduces (sums with counts, then centred squares: no catastrophic
    cancellation), through autograd-aware collectives, so the gradient is that of one process holding the whole
    batch (DDP then averages the parameters' gradients). Running statistics use the global count (unbiased
    variance), as ``nn.BatchNorm`` on the whole batch would. Evaluation mode with running statistics is plain
    ``F.batch_norm``. Same parameters, buffers and state-dict keys as ``nn.BatchNorm*d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected an input [B, C, *], got shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        use_batch_statistics = self.training or not self.track_running_stats
        if not use_batch_statistics or not (dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        values = input.float()  # statistics in float32 under bf16 autocast too, as nn.BatchNorm's
        dims = [0] + list(range(2, values.dim()))
        local_count = values.numel() // values.shape[1]
        totals = all_reduce(torch.cat([values.sum(dims), values.new_full((1,), float(local_count))]))
        count = totals[-1].detach()
        if float(count) < 2:
            raise ValueError(f"GlobalBatchNorm: expected more than 1 value per channel over all processes, got "
                             f"{int(count)}")
        shape = [1, -1] + [1] * (values.dim() - 2)
        mean = totals[:-1] / count
        centred = values - mean.view(shape)
        variance = all_reduce(centred.square().sum(dims)) / count
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = variance.detach() * (count / (count - 1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` (``nn.BatchNorm1d/2d/3d`` and their subclasses, ``models.necks.BatchNorm1d``
    included) made synchronised: ``torch.nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` otherwise, except
    inside a submodule whose ``sync_batchnorm`` attribute is False. Parameters and buffers are moved over (the same
    tensors), so state-dict keys and values are unchanged."""
    synchronised = nn.SyncBatchNorm.convert_sync_batchnorm if device.type == "cuda" else _global_batchnorm
    return _convert(module, synchronised)


def _convert(module: nn.Module, synchronised) -> nn.Module:
    if not getattr(module, "sync_batchnorm", True):
        return module
    if isinstance(module, _BatchNorm) and not isinstance(module, (GlobalBatchNorm, nn.SyncBatchNorm)):
        return synchronised(module)
    for name, child in module.named_children():
        module.add_module(name, _convert(child, synchronised))
    return module


def _global_batchnorm(module: _BatchNorm) -> GlobalBatchNorm:
    converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
    if module.affine:
        converted.weight, converted.bias = module.weight, module.bias
    if module.track_running_stats:
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
    converted.train(module.training)
    return converted


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(child, _BatchNorm) for child in module.modules())

