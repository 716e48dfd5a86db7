"""Layers point down, and the folder is the layer (docs/architecture.md).

A module's layer is the folder it lives in: ``ssl_challenge/<folder>/...``. ``LAYERS`` orders the folders from
the bottom up; a module may import its own folder and the folders below it. Every module is parsed with ``ast``
(imports inside functions count too); an import of a higher folder fails the test, naming both modules. A new
folder fails until it is given its place in ``LAYERS``, and a module at the top of the package (other than
``__init__.py`` and ``__main__.py``) fails too. Circles between modules fail even within a folder. The last tests
import each lower layer in a fresh interpreter and check that no module of a higher layer came with it.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "ssl_challenge"

# The package's folders, bottom to top. The package's own __init__ is below them all.
LAYERS = ["core", "data", "models", "clustering", "evaluation", "engine", "methods", "detection", "plan", "stages",
          "reporting"]
TOP_LEVEL_FILES = {"__init__.py", "__main__.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "ssl_challenge"


def is_module(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split(".")) if name != "ssl_challenge" else PACKAGE
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def is_package(name: str) -> bool:
    return (PACKAGE.joinpath(*name.split(".")) / "__init__.py").is_file()


def imported_modules(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports (names relative to the package, the package itself as
    'ssl_challenge'); ``from x import y`` counts as x.y when y is a module."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" and name != "ssl_challenge" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module + ".").startswith("ssl_challenge."):
                target = node.module.removeprefix("ssl_challenge").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if is_module(candidate) else (target or "ssl_challenge"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.name + ".").startswith("ssl_challenge."):
                    found.add(alias.name.removeprefix("ssl_challenge").lstrip(".") or "ssl_challenge")
    return found


def layer_of(module: str) -> int:
    """-1 for the package itself, else the index in ``LAYERS`` of the module's top folder."""
    if module in ("ssl_challenge", "__main__"):
        return -1
    folder = module.split(".")[0]
    if folder not in LAYERS:
        raise AssertionError(f"ssl_challenge.{module} is not in a layer folder: folders are {LAYERS} "
                             f"(a new folder goes into LAYERS in {Path(__file__).name} and docs/architecture.md)")
    return LAYERS.index(folder)


def layer_name(module: str) -> str:
    return "package" if layer_of(module) < 0 else LAYERS[layer_of(module)]


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def upward_imports() -> set[tuple[str, str]]:
    return {(module, target) for module, path in all_modules().items() for target in imported_modules(path)
            if layer_of(target) > layer_of(module)}


def test_the_folders_are_the_layers():
    folders = sorted(path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__")
    assert sorted(LAYERS) == folders, f"folders of the package {folders} against LAYERS {LAYERS}"
    loose = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in TOP_LEVEL_FILES)
    assert loose == [], f"modules at the top of the package (move each into its layer's folder): {loose}"
    for module in all_modules():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    problems = [f"ssl_challenge.{module} ({layer_name(module)}) imports ssl_challenge.{target} "
                f"({layer_name(target)})" for module, target in sorted(upward_imports())]
    assert not problems, "imports that point up:\n" + "\n".join(problems)


def import_circles() -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan)."""
    graph = {module: sorted(target for target in imported_modules(path) if target != module and not is_package(target))
             for module, path in all_modules().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    assert import_circles() == []


def test_circles_are_found(tmp_path, monkeypatch):
    package = tmp_path / "ssl_challenge"
    (package / "core").mkdir(parents=True)
    for name in ("__init__.py", "core/__init__.py"):
        (package / name).write_text("")
    (package / "core" / "a.py").write_text("from . import b\n")
    (package / "core" / "b.py").write_text("def later():\n    from .a import thing\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert import_circles() == [["core.a", "core.b"]]


def test_the_parser_sees_relative_absolute_and_function_level_imports(tmp_path, monkeypatch):
    package = tmp_path / "ssl_challenge"
    for folder in ("methods", "core", "stages"):
        (package / folder).mkdir(parents=True)
    for name in ("__init__.py", "core/__init__.py", "core/io.py", "stages/__init__.py", "stages/features.py",
                 "methods/__init__.py", "methods/base.py"):
        (package / name).write_text("")
    (package / "methods" / "dc.py").write_text(
        "from . import base\nfrom ..core.io import atomic_path\nimport ssl_challenge.stages.features\n"
        "def later():\n    from ssl_challenge.methods import build_method\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert imported_modules(package / "methods" / "dc.py") == {"methods.base", "core.io", "stages.features",
                                                               "methods"}


LOWER_LAYERS = range(len(LAYERS) - 1)


@pytest.mark.parametrize("layer", LOWER_LAYERS, ids=LAYERS[:-1])
def test_a_lower_layer_imports_without_the_upper_ones(layer):
    modules = [module for module in all_modules() if layer_of(module) == layer]
    names = [f"ssl_challenge.{module}" for module in modules]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(name for name in sys.modules if name.startswith('ssl_challenge'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [name.removeprefix("ssl_challenge").lstrip(".") or "ssl_challenge"
              for name in json.loads(result.stdout.splitlines()[-1])]
    upper = sorted(name for name in loaded if layer_of(name) > layer)
    assert not upper, f"importing the {LAYERS[layer]} layer loaded higher modules {upper}"


def test_workflow_scripts_import_the_installed_package():
    """A rule's script imports ``ssl_challenge`` as installed (.venv, or the conda environment's post-deploy
    script), never by putting src/ on ``sys.path`` itself: one way in, the one cluster users get."""
    scripts = sorted((SRC.parent / "workflow" / "scripts").glob("*.py"))
    assert scripts
    offenders = [script.name for script in scripts if "sys.path" in script.read_text()]
    assert offenders == [], f"workflow scripts that edit sys.path: {offenders}"
