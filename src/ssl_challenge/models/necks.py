"""Necks and heads that sit between a backbone and a loss.

``ODCNeck`` is ODC's projection (Zhan et al. 2020): global average pool of the last stage, fc(C -> 512),
BatchNorm1d without affine parameters, ReLU, dropout 0.5, fc(512 -> 256), ReLU, its linear layers initialised as
the reference's (Kaiming normal, fan_in, ReLU gain; bias 0). Its 256-d output is what the ODC memory stores and
clusters. ``linear_head`` is the classifier on top (normal std 0.01, bias 0, as the reference heads are
initialised).
"""
from __future__ import annotations

import torch
from torch import nn


class ODCNeck(nn.Module):
    """``Tensor[B, C, H, W]`` (a stage map, averaged over space) or ``Tensor[B, C]`` (already pooled)
    -> ``Tensor[B, out_dim]`` (non-negative: the last ReLU)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 256, dropout: float = 0.5):
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"ODCNeck: dimensions must be positive and 0 <= dropout < 1, got in_dim {in_dim}, "
                             f"hidden_dim {hidden_dim}, out_dim {out_dim}, dropout {dropout}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False),
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
