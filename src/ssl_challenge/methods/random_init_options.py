"""The random baseline's options (none) and declaration (torch-free: ``spec.py``); the method is
``random_init.py``."""
from __future__ import annotations

from dataclasses import dataclass

from .spec import MethodSpec


@dataclass(frozen=True)
class RandomOptions:
    pass


SPEC = MethodSpec(module="random_init", options=RandomOptions)  # never trained: no pretext loss for CODC
