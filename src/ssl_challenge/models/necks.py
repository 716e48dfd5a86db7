"""Necks and heads that sit between a backbone and a loss.

``ODCNeck`` is ODC's projection (Zhan et al. 2020): global average pool of the last stage, fc(C -> 512),
BatchNorm1d without affine parameters (:class:`BatchNorm1d`, thread-count independent; the reference's has
momentum 0.001 and stays per GPU when the trunk's BatchNorm is synchronised: ``bn_momentum``, ``sync_batchnorm``),
ReLU, dropout 0.5, fc(512 -> 256), ReLU, its linear layers initialised as the reference's (Kaiming normal, fan_in,
ReLU gain; bias 0).
Its 256-d output is what the ODC memory stores and clusters. ``linear_head`` is the classifier on top (normal std
0.01, bias 0, as the reference heads are initialised).
"""
from __future__ import annotations

import torch
from torch import nn


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training-mode statistics do not depend on the thread count.

    ATen's kernel splits the batch over threads and adds the partial sums in an order that depends on their
    number; here the mean and the biased variance are per-column reductions of ``[N, C]`` rows (``mean(0)``, one
    thread per column block, each column summed in row order), so 1 and 2 threads give the same bytes. A
    ``[B, C, L]`` input (a pooled map, as the linear probe's per-channel BatchNorm sees it) is reduced as its
    ``[B * L, C]`` rows, as ``nn.BatchNorm1d`` counts it. Same parameters, buffers and state dict as
    ``nn.BatchNorm1d``; running statistics are updated as it does (unbiased variance, ``momentum`` or a cumulative
    average when it is None). Evaluation mode with running statistics goes to ``nn.BatchNorm1d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        use_batch_statistics = self.training or not self.track_running_stats
        if input.dim() not in (2, 3) or not use_batch_statistics:
            return super().forward(input)
        if input.dim() == 3:
            batch, channels, length = input.shape
            rows = input.transpose(1, 2).reshape(batch * length, channels)
            return self.normalise_rows(rows).reshape(batch, length, channels).transpose(1, 2)
        return self.normalise_rows(input)

    def normalise_rows(self, input: torch.Tensor) -> torch.Tensor:
        count = input.shape[0]
        if count < 2:
            raise ValueError(f"BatchNorm1d: expected more than 1 value per channel in training, got {count}")
        mean = input.mean(0)
        centred = input - mean
        variance = centred.square().mean(0)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(variance.detach() * (count / (count - 1)),
                                                         alpha=momentum)
        output = centred * torch.rsqrt(variance + self.eps)
        if self.affine:
            output = output * self.weight + self.bias
        return output


class ODCNeck(nn.Module):
    """``Tensor[B, C, H, W]`` (a stage map, averaged over space) or ``Tensor[B, C]`` (already pooled)
    -> ``Tensor[B, out_dim]`` (non-negative: the last ReLU).

    ``bn_momentum``: the BatchNorm's running-statistics momentum (torch's default 0.1; the reference 0.001).
    ``sync_batchnorm`` False sets ``sync_batchnorm = False`` on the neck, which the training engine's conversion to
    synchronised BatchNorm (``engine.sync_batchnorm``) respects: the neck's statistics stay per process, as the
    reference's per-GPU neck, while the trunk's are synchronised."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 256, dropout: float = 0.5,
                 bn_momentum: float = 0.1, sync_batchnorm: bool = True):
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1 or not 0.0 <= dropout < 1.0 or not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"ODCNeck: dimensions must be positive, 0 <= dropout < 1 and 0 < bn_momentum <= 1, got "
                             f"in_dim {in_dim}, hidden_dim {hidden_dim}, out_dim {out_dim}, dropout {dropout}, "
                             f"bn_momentum {bn_momentum}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.sync_batchnorm = sync_batchnorm
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            BatchNorm1d(hidden_dim, affine=False, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
            nn.ReLU(inplace=True),
        )
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"ODCNeck: expected [B, {self.in_dim}] or [B, {self.in_dim}, H, W], "
                             f"got {tuple(features.shape)}")
        return self.layers(features)


def linear_head(in_dim: int, num_classes: int, init_std: float = 0.01,
                generator: torch.Generator | None = None) -> nn.Linear:
    """A linear classifier initialised as the reference heads are: weights ~ N(0, init_std^2), bias 0."""
    head = nn.Linear(in_dim, num_classes)
    reset_linear(head, init_std, generator)
    return head


def reset_linear(layer: nn.Linear, init_std: float = 0.01, generator: torch.Generator | None = None) -> None:
    """Re-draw a linear layer in place (DC re-initialises its classifier every epoch). The draw is made on the
    CPU with ``generator`` (when given) and copied, so it is the same on every device."""
    with torch.no_grad():
        weight = torch.empty(layer.weight.shape, dtype=layer.weight.dtype)
        nn.init.normal_(weight, std=init_std, generator=generator)
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.zero_()
