"""The options and declaration of ``external`` (torch-free: ``spec.py``); the method is ``external.py``."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.config import ConfigError
from ..models.external import LAYOUTS
from .spec import EXTERNAL_WEIGHTS, InputFile, MethodSpec


@dataclass(frozen=True)
class ExternalOptions:
    weights: str = ""  # the checkpoint file (read with weights_only=True)
    layout: str = "torchvision"  # one of models.external.LAYOUTS


def check(options: ExternalOptions, where: str) -> None:
    if not options.weights:
        raise ConfigError(f"{where}.weights: the path of the checkpoint to evaluate is required")
    if options.layout not in LAYOUTS:
        raise ConfigError(f"{where}.layout: {options.layout!r}; expected one of {list(LAYOUTS)}")


SPEC = MethodSpec(module="external", options=ExternalOptions, check=check,
                  input_files=(InputFile("weights", EXTERNAL_WEIGHTS),), converts=True)
