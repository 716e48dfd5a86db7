"""``external``: a backbone trained elsewhere (torchvision, OpenSelfSup/MMSelfSup, VISSL), never trained here.

Its pretraining job converts the weights into the project's model file (``pretraining.convert_external``, key
layouts in ``models/external.py``); from there it goes through every track like any other model. This module
holds its options (checked like every method's) and refuses to be built for training.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.config import ConfigError, from_dict
from ..models.external import LAYOUTS


@dataclass(frozen=True)
class ExternalOptions:
    weights: str = ""  # the checkpoint file (read with weights_only=True)
    layout: str = "torchvision"  # one of models.external.LAYOUTS


def parse_options(options: dict) -> ExternalOptions:
    parsed = from_dict(ExternalOptions, options, where="method_options")
    if not parsed.weights:
        raise ConfigError("method_options.weights: the path of the checkpoint to evaluate is required")
    if parsed.layout not in LAYOUTS:
        raise ConfigError(f"method_options.layout: {parsed.layout!r}; expected one of {list(LAYOUTS)}")
    return parsed


def build(backbone: nn.Module, options: dict, num_samples: int) -> nn.Module:
    parse_options(options)
    raise ConfigError("method 'external' is not trained: its pretraining job converts method_options.weights "
                      "(pretraining.convert_external); set epochs to 0")
