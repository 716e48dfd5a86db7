"""Which library code a workflow stage runs, and a digest of it.

Snakemake tracks a rule's script but not the modules the script imports. The code a stage runs is the import
closure, inside this package, of its entry points: the rule's script (``workflow/scripts/X.py``) and, for
training, the method modules that ``methods.build_method`` loads by name. The closure is read from the source
with ``ast`` (every ``import`` and ``from ... import``, relative or absolute, at module level or inside a
function), never by importing anything: this module is torch-free and runs at DAG-build time.

A ``from package import name`` counts ``package.name`` as imported when it is a module, and importing
``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so those are in the closure too. Imports outside
the package (torch, numpy) are the environment's business, pinned by the lock file, not part of the digest.

The digest covers each Python file's syntax tree, not its bytes: comments, docstrings (of modules, classes and
functions), blank lines and formatting are left out, so editing them leaves every job up to date (at full scale a
rerun costs GPU-hours), while any change to code (a statement, a name, a constant, an import) changes the digest
of every stage whose closure holds the file. The tree is ``ast.dump`` of the parsed file, whose text belongs to
the Python version: the lock file pins it. A file that is not Python is digested by its bytes.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

PACKAGE_DIR = Path(__file__).resolve().parents[1]
_PARSED: dict[tuple[str, str], set[str]] = {}  # (file, source) -> imported names: each version parsed once
_TREE_DIGESTS: dict[tuple[str, str], str] = {}  # (file, source) -> digest of its normalised tree
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)  # the nodes that hold a docstring


def module_name(path: Path, package_dir: Path) -> str | None:
    """``package_dir/a/b.py`` -> ``ssl_challenge.a.b`` (``a/__init__.py`` -> ``ssl_challenge.a``); None outside."""
    try:  # both paths are resolved by the callers
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
    except ValueError:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package_dir.name] + parts)


def module_file(name: str, package_dir: Path) -> Path | None:
    """The source file of module ``name`` of the package (``x.py`` or ``x/__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def import_statements(statements: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``statements`` and in the blocks nested in them (functions, classes, if, try,
    with, loops, match). Imports are statements, so expressions are never searched: cheaper than ``ast.walk``."""
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                yield from import_statements(block)
        for clause in [*getattr(node, "handlers", ()), *getattr(node, "cases", ())]:  # except and case clauses
            yield from import_statements(clause.body)


def imported_names(source: str | ast.Module, module: str | None, is_package: bool, where: str = "<source>") -> set[str]:
    """Absolute names of every module the source (text or parsed) may import, from anywhere in it (functions
    included).

    ``module`` is the source's own dotted name (None for a script outside the package: relative imports are
    then an error). For ``from X import a`` both ``X`` and ``X.a`` are returned; the caller keeps the names that
    are modules.
    """
    names = set()
    tree = source if isinstance(source, ast.Module) else ast.parse(source, filename=where)
    for node in import_statements(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            if module is None:
                raise ValueError(f"{where}, line {node.lineno}: a relative import outside a package")
            package = module.split(".") if is_package else module.split(".")[:-1]
            if node.level - 1 > len(package) - 1:
                raise ValueError(f"{where}, line {node.lineno}: relative import beyond the top package")
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def parents_of(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def import_closure(entries: Iterable[str | os.PathLike], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The entry files and every package file they import, directly or not, sorted (entries first)."""
    package_dir = package_dir.resolve()
    entries = [Path(entry).resolve() for entry in entries]
    seen: dict[Path, None] = {}
    files: dict[str, Path | None] = {}  # module name -> its file, resolved once per closure
    pending = list(entries)
    for entry in entries:  # an entry inside the package runs its packages' __init__ too
        name = module_name(entry, package_dir)
        if name:
            pending += [file for parent in parents_of(name) if (file := module_file(parent, package_dir))]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{path}: an entry point of a stage's code digest does not exist")
        seen[path] = None
        source = path.read_text()
        if (str(path), source) not in _PARSED:  # one parse gives both the imports and the digest
            name = module_name(path, package_dir)
            tree = ast.parse(source, filename=str(path))
            _PARSED[str(path), source] = imported_names(tree, name, path.name == "__init__.py", where=str(path))
            _TREE_DIGESTS[str(path), source] = tree_digest(tree)
        for imported in _PARSED[str(path), source]:
            if imported.split(".")[0] != package_dir.name:
                continue
            for parent in parents_of(imported):
                if parent not in files:
                    files[parent] = module_file(parent, package_dir)
                file = files[parent]
                if file is not None and file not in seen:
                    pending.append(file)
    inside = sorted(path for path in seen if path not in entries)
    return [path for path in entries if path in seen] + inside


def label(path: Path, package_dir: Path) -> str:
    """A location-independent name: relative to the directory above the package's parent (the repository)."""
    return Path(os.path.relpath(Path(path).resolve(), package_dir.resolve().parent.parent)).as_posix()


def code_digest(entries: Sequence[str | os.PathLike], package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (16 hex digits) over the names and code (:func:`file_digest`) of ``import_closure(entries)``."""
    digest = hashlib.sha256()
    repository = package_dir.resolve().parent.parent
    for path in import_closure(entries, package_dir):  # resolved paths
        digest.update(Path(os.path.relpath(path, repository)).as_posix().encode() + b"\0")
        digest.update(file_digest(path).encode() + b"\0")
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """SHA-256 of a Python file's normalised syntax tree (:func:`normalised_tree`), or of another file's bytes.
    Computed once per file version (DAG build digests the same modules for many rules)."""
    if path.suffix != ".py":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    source = path.read_text()
    if (str(path), source) not in _TREE_DIGESTS:
        _TREE_DIGESTS[str(path), source] = tree_digest(ast.parse(source, filename=str(path)))
    return _TREE_DIGESTS[str(path), source]


def tree_digest(tree: ast.Module) -> str:
    """SHA-256 of :func:`normalised_tree` of a parsed file (whose docstrings it removes)."""
    return hashlib.sha256(normalised_tree(tree).encode()).hexdigest()


def normalised_tree(source: str | ast.Module, where: str = "<source>") -> str:
    """The code of ``source`` without its documentation: ``ast.dump`` of its tree with the docstrings of the
    module, its classes and functions removed, without line and column numbers. Comments and formatting never
    reach the tree. A string statement that is not first in its body is kept, as any other code. A parsed tree
    given is changed in place (its docstrings removed)."""
    tree = source if isinstance(source, ast.Module) else ast.parse(source, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, DOCUMENTED) and node.body and is_docstring(node.body[0]):
            node.body = node.body[1:]
    return ast.dump(tree, include_attributes=False)


def is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def describe(entries: Sequence[str | os.PathLike], package_dir: Path = PACKAGE_DIR) -> str:
    """``code digest <hex> of <entries>``: a rule's ``code`` param, so that ``snakemake -n`` says what changed."""
    names = " + ".join(label(Path(entry), package_dir) for entry in entries)
    return f"code digest {code_digest(entries, package_dir)} of {names}"


@functools.lru_cache(maxsize=None)
def script_code(script: str | os.PathLike, methods: tuple[str, ...] = ()) -> str:
    """The ``code`` param of a rule that runs ``script`` and, for training, builds ``methods`` (whose modules
    ``methods.build_method`` loads by name): :func:`describe` of them, computed once per process (DAG build)."""
    return describe([Path(script), *method_files(methods)])


# ------------------------------------------------------------------------------------------------ methods
def method_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``methods.METHODS`` (method name -> module name), read from ``methods/__init__.py`` without importing it."""
    path = package_dir / "methods" / "__init__.py"
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "METHODS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path}: no `METHODS = {{...}}` dict literal (the method registry) found")


def method_files(methods: Iterable[str], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The modules ``methods.build_method`` imports by name for ``methods`` (the import closure cannot see them)."""
    registry = method_modules(package_dir)
    unknown = [name for name in methods if name not in registry]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(registry)} (methods/__init__.py METHODS)")
    return [package_dir / "methods" / f"{registry[name]}.py" for name in methods]


def published_samples_param(folder: str, k: int) -> dict | str:
    """The param of one k's low-shot samples job for config key evaluation.voc07_lowshot.published_samples: the
    folder and a digest of its train_targets_sample<s>_k<k>.json files of that k (editing them re-reads them); ""
    when the samples are drawn."""
    if not folder:
        return ""
    files = sorted(Path(folder).glob(f"train_targets_sample*_k{k}.json"))
    if not files:
        raise ValueError(f"config key 'evaluation.voc07_lowshot.published_samples': {folder!r} holds no "
                         f"train_targets_sample<s>_k{k}.json files for k={k} (the challenge's "
                         "low_shot_voc07/low_shot_train/; or remove that k from evaluation.voc07_lowshot.k_values)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"\0".join([path.name.encode(), path.read_bytes(), b""]))
    return {"folder": folder, "digest": digest.hexdigest()[:16]}
