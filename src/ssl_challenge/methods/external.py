"""``external``: a backbone trained elsewhere (torchvision, OpenSelfSup/MMSelfSup, VISSL), never trained here.

Its pretraining job converts the weights into the project's model file (:func:`convert`, key layouts in
``models/external.py``); from there it goes through every track like any other model. Its options are in
``external_options.py``; it refuses to be built for training.
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..core.config import ConfigError
from .external_options import SPEC


def build(backbone: nn.Module, options: dict, num_samples: int) -> nn.Module:
    SPEC.parse(options)
    raise ConfigError("method 'external' is not trained: its pretraining job converts method_options.weights "
                      "(external.convert); set epochs to 0")


def convert(backbone_config: dict, options: dict, output: Path, where: str, log: logging.Logger) -> None:
    """The backbone of ``options["weights"]`` (a checkpoint in the options' layout, loaded with
    ``weights_only=True``), matched strictly onto a backbone of ``backbone_config`` and written to ``output`` by the
    training loop's writer (``engine.train.backbone_file``: 0 epochs, 0 seconds). ``where`` is the model's config
    key (``models.<name>``)."""
    from types import SimpleNamespace

    from ..core.io import load_torch_file, torch_save_atomic
    from ..engine.checkpoint import RunPosition
    from ..engine.train import backbone_file
    from ..models.backbones import build_backbone
    from ..models.external import match_backbone, trunk_state_dict

    try:
        parsed = SPEC.parse(options, where=f"{where}.method_options")
    except ConfigError as error:
        raise ConfigError(f"config key {error}") from error
    checkpoint = load_torch_file(parsed.weights, f"a checkpoint in the {parsed.layout} layout",
                                 f"Check config key {where}.method_options.weights and .layout.")
    backbone = build_backbone(backbone_config)
    mapped = trunk_state_dict(checkpoint, parsed.layout, f"{parsed.weights} ({where})")
    backbone.load_state_dict(match_backbone(mapped, backbone.state_dict(), f"{parsed.weights} ({where})"),
                             strict=True)
    content = backbone_file(SimpleNamespace(backbone=backbone), SimpleNamespace(method="external"), RunPosition())
    torch_save_atomic(content, output)
    log.info("converted %s (layout %s, %d tensors) into %s", parsed.weights, parsed.layout, len(mapped), output)
