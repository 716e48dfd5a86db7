"""Pretraining methods and their registry.

``METHODS`` maps a config's ``method`` name to its module. ``methods/<module>.py`` builds the method, one
``torch.nn.Module`` behind the Protocol of ``base.py`` (``build(backbone, options: dict, num_samples)``);
``methods/<module>_options.py`` declares, without torch, what the rest of the project needs to know about it: its
options with their defaults and checks, the options that name input files, the pseudo-labels it asks the workflow
for, whether a CODC member may keep it as its pretext (``SPEC``, a :class:`spec.MethodSpec`). The planner and the
rules ask the functions below at DAG-build time, so importing this package imports no torch; a method's module
(and torch, faiss) is imported only when the method is built. docs/adding-a-method.md is the recipe.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..core.config import ConfigError
from .spec import LABELS, MethodSpec, PseudoLabels

if TYPE_CHECKING:  # the workflow's planning imports this module at DAG-build time, without torch
    import torch

# A config's method -> methods/<module>.py and methods/<module>_options.py. core.provenance reads this literal
# (without importing the package) to digest the modules a training run imports by name.
METHODS = {
    "random": "random_init",
    "rot": "rotation",
    "dc": "dc",
    "odc": "odc",
    "cls": "cls",
    "codc": "codc",
    "external": "external",
}


@dataclass(frozen=True)
class FileOption:
    """An input file of a run: the option path that names it (``("base_options", "labels_path")`` for one of a
    wrapped method), its kind (``spec.INPUT_KINDS``), the file, and the method whose option it is."""

    path: tuple[str, ...]
    kind: str
    file: str
    method: str


def method_spec(name: str) -> MethodSpec:
    """The declaration of method ``name`` (its ``<module>_options.SPEC``)."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{METHODS[name]}_options").SPEC


def method_module(name: str) -> ModuleType:
    """The module that builds method ``name`` (imports torch)."""
    return importlib.import_module(f"{__name__}.{method_spec(name).module}")


def pretext_methods() -> list[str]:
    """The methods a CODC member may keep as its own pretext loss."""
    return [name for name in METHODS if method_spec(name).codc_pretext]


def parse_options(name: str, options: dict, where: str = "method_options") -> Any:
    """Method ``name``'s options dataclass from ``options``, checked (``MethodSpec.parse``)."""
    return method_spec(name).parse(options, where)


def build_method(name: str, backbone: torch.nn.Module, options: dict, num_samples: int) -> torch.nn.Module:
    return method_module(name).build(backbone, dict(options), num_samples)


def built_methods(name: str, options: dict, where: str = "method_options") -> list[str]:
    """The methods a run of ``name`` builds: itself and the one it wraps (a CODC member's pretext), in order."""
    spec = method_spec(name)
    wrapped = spec.wraps(spec.parse(options, where)) if spec.wraps else None
    if wrapped is None:
        return [name]
    return [name, *built_methods(wrapped.method, wrapped.options, f"{where}.{wrapped.option}")]


def input_files(name: str, options: dict, where: str = "method_options") -> list[FileOption]:
    """The files a run of ``name`` with ``options`` reads (empty options skipped), the wrapped method's included."""
    spec = method_spec(name)
    parsed = spec.parse(options, where)
    files = [FileOption((entry.option,), entry.kind, getattr(parsed, entry.option), name)
             for entry in spec.input_files if getattr(parsed, entry.option)]
    wrapped = spec.wraps(parsed) if spec.wraps else None
    if wrapped is not None:
        for inner in input_files(wrapped.method, wrapped.options, f"{where}.{wrapped.option}"):
            files.append(FileOption((wrapped.option, *inner.path), inner.kind, inner.file, inner.method))
    return files


def pseudo_labels(name: str, options: dict, where: str = "method_options") -> PseudoLabels | None:
    """The pseudo-labels a configured model of ``name`` asks the workflow for (None: it asks for none)."""
    spec = method_spec(name)
    return spec.pseudo_labels(spec.parse(options, where)) if spec.pseudo_labels else None


def pseudo_labels_option(name: str) -> str | None:
    """The option in which a method that asks for pseudo-labels receives their file."""
    spec = method_spec(name)
    if spec.pseudo_labels is None:
        return None
    return next(entry.option for entry in spec.input_files if entry.kind == LABELS)
