"""Pretraining methods, one module each, behind the Protocol of ``base.py``.

``METHODS`` maps a config's ``method`` name to the module that implements it; each module exposes
``build(backbone, options: dict, num_samples: int) -> nn.Module``. Modules are imported on demand so that a
method's dependencies (faiss for the clustering methods) load only when it is used.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the workflow's planning imports this module at DAG-build time, without torch
    import torch

METHODS = {
    "random": "random_init",
    "rot": "rotation",
    "dc": "dc",
    "odc": "odc",
    "cls": "cls",
    "codc": "codc",
    "external": "external",
}
CODC_BASE_METHODS = ("rot", "dc", "odc", "cls")  # the methods a CODC member can keep as its pretext loss


def build_method(name: str, backbone: torch.nn.Module, options: dict, num_samples: int) -> torch.nn.Module:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module = importlib.import_module(f"{__name__}.{METHODS[name]}")
    return module.build(backbone, dict(options), num_samples)

