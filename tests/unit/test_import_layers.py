"""Layers point down: no module of ``ssl_challenge`` imports one of a higher layer (docs/architecture.md).

Every module is parsed with ``ast`` (imports inside functions count too) and placed in a layer by its longest
matching name prefix in ``LAYERS``; an import of a higher layer fails the test, naming both modules. A module that
no prefix matches fails as well, so that a new module is given its place on purpose. The second test imports each
lower layer in a fresh interpreter and checks that no module of a higher layer came with it.
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

# Bottom to top. A module may import its own layer and the layers below it.
LAYERS = [
    ("foundation", ["ssl_challenge", "io", "finite", "numerics", "chunked_conv", "config", "devices", "jobs",
                    "provenance", "run_files"]),
    ("building blocks", ["data", "models", "clustering", "evaluation.ap", "evaluation.svm_solver",
                         "evaluation.detection_ap",
                         "evaluation.folds", "evaluation.svm", "evaluation.lowshot",  # the VOC07 protocols
                         "feature_files",
                         "submission"]),  # the challenge's file formats: writers, readers and scorers
    ("engine", ["engine"]),  # receives a built method: never imports methods or orchestration
    ("methods", ["methods"]),
    # config_checks validates the workflow's config across keys with the plan (planning), so it sits beside it
    ("orchestration", ["pretraining", "features", "pseudo_labels", "concat", "evaluation", "planning",
                       "config_checks", "detection", "seed_configs"]),
    ("reporting", ["tables", "tables_provenance", "submission_build", "score", "report_pages", "training_curves",
                   "seeds_study"]),
]

# Known upward imports, each with the reason it is tolerated (none today); an entry that no longer occurs fails
# test_allow_list_is_current.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


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
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"module ssl_challenge.{module} has no layer: add it (or its package) to LAYERS in "
                             f"{Path(__file__).name} and to docs/architecture.md")
    return max(matches)[1]


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def upward_imports() -> set[tuple[str, str]]:
    return {(module, target) for module, path in all_modules().items() for target in imported_modules(path)
            if layer_of(target) > layer_of(module)}


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    problems = [f"ssl_challenge.{module} ({LAYERS[layer_of(module)][0]}) imports ssl_challenge.{target} "
                f"({LAYERS[layer_of(target)][0]})" for module, target in sorted(upward_imports() - KNOWN_VIOLATIONS)]
    assert not problems, "imports that point up:\n" + "\n".join(problems)


def test_allow_list_is_current():
    fixed = sorted(KNOWN_VIOLATIONS - upward_imports())
    assert not fixed, f"no longer imported, remove from KNOWN_VIOLATIONS: {fixed}"


def test_the_parser_sees_relative_absolute_and_function_level_imports(tmp_path, monkeypatch):
    package = tmp_path / "ssl_challenge"
    (package / "methods").mkdir(parents=True)
    for name in ("__init__.py", "io.py", "features.py", "methods/__init__.py", "methods/base.py"):
        (package / name).write_text("")
    (package / "methods" / "dc.py").write_text(
        "from . import base\nfrom ..io import atomic_path\nimport ssl_challenge.features\n"
        "def later():\n    from ssl_challenge.methods import build_method\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert imported_modules(package / "methods" / "dc.py") == {"methods.base", "io", "features", "methods"}


LOWER_LAYERS = range(len(LAYERS) - 1)


@pytest.mark.parametrize("layer", LOWER_LAYERS, ids=[LAYERS[index][0] for index in LOWER_LAYERS])
def test_a_lower_layer_imports_without_the_upper_ones(layer):
    known = {module for module, _ in KNOWN_VIOLATIONS}
    modules = [module for module in all_modules() if layer_of(module) == layer and module not in known]
    names = [module if module == "ssl_challenge" else f"ssl_challenge.{module}" for module in modules]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(name for name in sys.modules if name.startswith('ssl_challenge'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [name.removeprefix("ssl_challenge").lstrip(".") or "ssl_challenge"
              for name in json.loads(result.stdout.splitlines()[-1])]
    # a parent package (evaluation/__init__.py for evaluation.ap) is always loaded; its own imports are checked above
    upper = sorted(name for name in loaded if layer_of(name) > layer and not is_package(name))
    assert not upper, f"importing the {LAYERS[layer][0]} layer ({modules}) loaded higher modules {upper}"


def test_workflow_scripts_import_the_installed_package():
    """A rule's script imports ``ssl_challenge`` as installed (.venv, or the conda environment's post-deploy
    script), never by putting src/ on ``sys.path`` itself: one way in, the one cluster users get."""
    scripts = sorted((SRC.parent / "workflow" / "scripts").glob("*.py"))
    assert scripts
    offenders = [script.name for script in scripts if "sys.path" in script.read_text()]
    assert offenders == [], f"workflow scripts that edit sys.path: {offenders}"
