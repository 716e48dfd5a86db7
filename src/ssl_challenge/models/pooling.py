"""Per-layer average pooling of stage maps into fixed-length features (the SVM and linear-probe inputs).

The reference pools each stage of a ResNet-50 at 224 px to about 9k dimensions (:data:`REFERENCE_RESNET50_POOLING`).
Other backbones and input sizes get a pooling chosen by :func:`choose_pooling` so that every layer has a
dimension close to a target; the resulting plan (kernel, stride, padding, dim per layer) is saved with the
features, so it is always known how a feature file was made.

Averaging follows ``torch.nn.AvgPool2d`` defaults (zero padding counted in the mean), as the reference does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, stride, padding) per layer; at 224 px: 9216, 9216, 8192, 9216, 8192 dimensions.
REFERENCE_RESNET50_POOLING: dict[str, tuple[int, int, int]] = {
    "feat1": (10, 10, 4),
    "feat2": (16, 8, 0),
    "feat3": (13, 5, 0),
    "feat4": (8, 3, 0),
    "feat5": (6, 1, 0),
}


def pooled_side(spatial_size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of an average pooling (floor mode), as ``torch.nn.AvgPool2d`` computes it."""
    return (spatial_size + 2 * padding - kernel) // stride + 1


def choose_pooling(channels: int, spatial_size: int, target_dim: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) whose output ``channels * side**2`` is as close as possible to ``target_dim``.

    The rule: every output side ``side`` in 1..spatial_size is feasible without padding using
    ``stride = spatial_size // side`` and ``kernel = spatial_size - (side - 1) * stride`` (windows at least as
    large as the stride, together covering the whole map, overlapping when the side does not divide the map).
    The side whose dimension is closest to the target wins; ties go to the smaller side (fewer dimensions). A
    target below ``channels`` gives the global average (side 1): pooling cannot remove channels.
    """
    if channels < 1 or spatial_size < 1 or target_dim < 1:
        raise ValueError(f"choose_pooling: channels ({channels}), spatial_size ({spatial_size}) and "
                         f"target_dim ({target_dim}) must be positive")
    best_side = min(range(1, spatial_size + 1), key=lambda side: (abs(channels * side * side - target_dim), side))
    stride = spatial_size // best_side
    kernel = spatial_size - (best_side - 1) * stride
    return kernel, stride, 0


def pooling_plan(backbone: nn.Module, input_size: int, target_dim: int | str) -> dict[str, dict[str, int]]:
    """``{layer: {"kernel", "stride", "padding", "dim", "channels", "spatial_size", "output_size"}}``.

    ``target_dim`` is a dimension per layer (an int or a string of digits, as in the config) or ``"reference"``
    (the ResNet-50 table, applied as is). The stage map sizes come from a dry forward of one zero image of
    ``input_size`` px, run in eval mode (BatchNorm statistics untouched) without gradients.
    """
    if isinstance(target_dim, str) and target_dim != "reference":
        if not target_dim.isdigit():
            raise ValueError(f"features.pooling: expected 'reference' or a dimension, got {target_dim!r}")
        target_dim = int(target_dim)
    map_shapes = stage_map_shapes(backbone, input_size)
    plan = {}
    for layer, (channels, spatial_size) in map_shapes.items():
        if target_dim == "reference":
            if layer not in REFERENCE_RESNET50_POOLING:
                raise ValueError(f"features.pooling 'reference': no reference pooling for layer {layer!r}")
            kernel, stride, padding = REFERENCE_RESNET50_POOLING[layer]
        else:
            kernel, stride, padding = choose_pooling(channels, spatial_size, target_dim)
        side = pooled_side(spatial_size, kernel, stride, padding)
        if side < 1 or 2 * padding > kernel:
            raise ValueError(f"pooling of {layer} (kernel {kernel}, stride {stride}, padding {padding}) does not "
                             f"fit its {spatial_size}x{spatial_size} map at input size {input_size}")
        plan[layer] = {"kernel": kernel, "stride": stride, "padding": padding, "dim": channels * side * side,
                       "channels": channels, "spatial_size": spatial_size, "output_size": side}
    return plan


def stage_map_shapes(backbone: nn.Module, input_size: int) -> dict[str, tuple[int, int]]:
    """``{layer: (channels, side)}`` of the backbone's stage maps for a square ``input_size`` image."""
    was_training = backbone.training
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    backbone.eval()
    try:
        with torch.no_grad():
            outputs = backbone(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        backbone.train(was_training)
    shapes = {}
    for layer, feature_map in outputs.items():
        if feature_map.shape[2] != feature_map.shape[3]:
            raise ValueError(f"{layer}: expected a square map from a square input, got {tuple(feature_map.shape)}")
        shapes[layer] = (int(feature_map.shape[1]), int(feature_map.shape[2]))
    return shapes


def pool_features(
    stage_outputs: dict[str, torch.Tensor], plan: dict[str, dict], layers: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Stage maps ``{layer: [B, C, H, W]}`` -> flattened pooled features ``{layer: [B, plan[layer]["dim"]]}``.

    ``layers`` defaults to every layer of the plan; each must be in both the plan and the stage outputs.
    """
    features = {}
    for layer in plan if layers is None else layers:
        if layer not in plan:
            raise KeyError(f"pooling plan has no layer {layer!r}; it has {sorted(plan)}")
        if layer not in stage_outputs:
            raise KeyError(f"backbone outputs have no layer {layer!r}; they have {sorted(stage_outputs)}")
        entry = plan[layer]
        pooled = F.avg_pool2d(stage_outputs[layer], entry["kernel"], entry["stride"], entry["padding"])
        flat = pooled.flatten(1)  # C-major (NCHW order) whatever the memory format, as in the reference
        if flat.shape[1] != entry["dim"]:
            raise ValueError(f"{layer}: pooled to {flat.shape[1]} dims, the plan says {entry['dim']} "
                             "(the plan was made for another input size or backbone)")
        features[layer] = flat
    return features
