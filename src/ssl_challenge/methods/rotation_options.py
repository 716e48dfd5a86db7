"""ROT's options and declaration (torch-free: ``spec.py``); the method is ``rotation.py``."""
from __future__ import annotations

from dataclasses import dataclass

from .spec import MethodSpec


@dataclass(frozen=True)
class RotationOptions:
    head_init_std: float = 0.01  # normal init of the 4-way head (bias 0)


SPEC = MethodSpec(module="rotation", options=RotationOptions, codc_pretext=True)
