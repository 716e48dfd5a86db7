"""Key layouts of ResNet-50 checkpoints trained elsewhere, mapped onto the project's backbone.

The project's ``resnet50`` backbone keeps torchvision's attribute names (``conv1``, ``bn1``, ``layer1.0.conv1``...,
see ``backbones.py``), so every layout reduces to finding the trunk's tensors in the checkpoint and removing a
prefix:

- ``torchvision``: the file is the state dict itself (``torchvision.models.resnet50().state_dict()``, or the
  backbone weights extracted from OpenSelfSup/MMSelfSup without prefix); the classifier ``fc.*`` is dropped.
- ``openselfsup`` / ``mmselfsup``: a training checkpoint ``{"state_dict": {...}, "meta": ...}`` whose backbone
  keys start with ``backbone.``; the other components (``neck.``, ``head.``, memory banks, data preprocessors)
  are not the backbone and are dropped.
- ``vissl``: ``{"classy_state_dict": {"base_model": {"model": {"trunk": {...}, "heads": {...}}}}}`` whose trunk
  keys start with ``_feature_blocks.``; the heads are dropped.

The mapped dict must match the backbone's keys exactly: missing and unexpected keys (and shape mismatches) are an
error that lists them. One tolerance: BatchNorm's ``num_batches_tracked`` counters, absent from older torchvision
files, are filled with 0 (they never change the features: the backbone is evaluated in eval mode).
"""
from __future__ import annotations

from typing import Mapping

LAYOUTS = ("torchvision", "openselfsup", "mmselfsup", "vissl")
LISTED = 12  # keys named in an error before "... and N more"


class ExternalCheckpointError(ValueError):
    """The checkpoint does not hold a backbone in the given layout, or its keys do not match the backbone's."""


def _listing(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:LISTED])
    return shown + (f" ... and {len(keys) - LISTED} more" if len(keys) > LISTED else "")


def _nested(checkpoint, path: tuple[str, ...], where: str):
    value = checkpoint
    for depth, key in enumerate(path):
        if not isinstance(value, Mapping) or key not in value:
            found = sorted(value)[:LISTED] if isinstance(value, Mapping) else type(value).__name__
            raise ExternalCheckpointError(f"{where}: no {'/'.join(path[: depth + 1])!r} (found {found})")
        value = value[key]
    return value


def _with_prefix(state: Mapping, prefix: str, where: str, layout: str) -> dict:
    """The keys that start with ``prefix``, without it; an error when none does."""
    kept = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not kept:
        raise ExternalCheckpointError(
            f"{where}: no key starts with {prefix!r}, so it is not a {layout} checkpoint (first keys: "
            f"{_listing(list(state)[:LISTED])}); for backbone weights without prefix use layout: torchvision")
    return kept


def trunk_state_dict(checkpoint, layout: str, where: str) -> dict:
    """The backbone tensors of ``checkpoint`` in ``layout`` with the project's key names (before the match)."""
    if layout not in LAYOUTS:
        raise ExternalCheckpointError(f"{where}: unknown layout {layout!r}; expected one of {list(LAYOUTS)}")
    if not isinstance(checkpoint, Mapping):
        raise ExternalCheckpointError(f"{where}: expected a dict, found {type(checkpoint).__name__}")
    if layout == "torchvision":
        return {key: value for key, value in checkpoint.items() if not key.startswith("fc.")}
    if layout in ("openselfsup", "mmselfsup"):
        state = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
        return _with_prefix(state, "backbone.", where, layout)
    trunk = _nested(checkpoint, ("classy_state_dict", "base_model", "model", "trunk"), where)
    unprefixed = [key for key in trunk if not key.startswith("_feature_blocks.")]
    if unprefixed:  # VISSL's ResNe(X)t trunk holds nothing else
        raise ExternalCheckpointError(f"{where}: VISSL trunk keys without the '_feature_blocks.' prefix: "
                                      f"{_listing(unprefixed)}")
    return _with_prefix(trunk, "_feature_blocks.", where, layout)


def match_backbone(mapped: Mapping, expected: Mapping, where: str) -> dict:
    """``mapped`` checked against the backbone's state dict ``expected`` (name -> tensor): the same keys (missing
    ``num_batches_tracked`` counters filled with 0) and shapes; otherwise an error listing what differs."""
    import torch

    mapped = dict(mapped)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros_like(value)
    missing, unexpected = set(expected) - set(mapped), set(mapped) - set(expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    shapes = [f"{key} {tuple(mapped[key].shape)} != {tuple(expected[key].shape)}" for key in sorted(expected)
              if key in mapped and tuple(mapped[key].shape) != tuple(expected[key].shape)]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:LISTED])}")
    if problems:
        raise ExternalCheckpointError(f"{where}: the checkpoint does not match the backbone: " + "; ".join(problems)
                                      + ". Check the model's backbone and method_options.layout")
    return {key: mapped[key].detach().clone().to(expected[key].dtype) for key in expected}
