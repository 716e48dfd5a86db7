"""The code a stage runs: import closures read with ast on a fake package, and on the real one per rule."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_challenge.core import provenance

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflow" / "scripts"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def fake_package(tmp_path):
    """``tmp_path/src/pkg``: every kind of import, one module nobody imports, and a script outside the package."""
    package = tmp_path / "src" / "pkg"
    write(package / "__init__.py", "")
    write(package / "top.py", "from . import helper\nfrom .sub.deep import deep_function\n")
    write(package / "helper.py", "import os\n\ndef later():\n    from .lazy import value  # inside a function\n")
    write(package / "lazy.py", "value = 1\n")
    write(package / "sub" / "__init__.py", "'''the sub package'''\n")
    write(package / "sub" / "deep.py", "from .. import absolute_user\n\ndef deep_function():\n    pass\n")
    write(package / "absolute_user.py", "import pkg.leaf\nfrom pkg.sub import *\n")
    write(package / "leaf.py", "import numpy\n")
    write(package / "unrelated.py", "from . import top\n")
    script = write(tmp_path / "workflow" / "scripts" / "run.py", "from pkg.top import helper\n")
    return package, script


def closure_names(entries, package):
    return [provenance.label(path, package) for path in provenance.import_closure(entries, package)]


def test_closure_follows_relative_absolute_star_and_function_level_imports(fake_package):
    package, script = fake_package
    assert closure_names([script], package) == [
        "workflow/scripts/run.py",
        "src/pkg/__init__.py",
        "src/pkg/absolute_user.py",
        "src/pkg/helper.py",
        "src/pkg/lazy.py",  # imported inside a function
        "src/pkg/leaf.py",  # `import pkg.leaf`
        "src/pkg/sub/__init__.py",  # a package runs its __init__
        "src/pkg/sub/deep.py",
        "src/pkg/top.py",
    ]
    assert "src/pkg/unrelated.py" not in closure_names([script], package)


def test_an_entry_inside_the_package_brings_its_packages_init(fake_package):
    package, _ = fake_package
    assert closure_names([package / "sub" / "deep.py"], package)[:3] == [
        "src/pkg/sub/deep.py", "src/pkg/__init__.py", "src/pkg/absolute_user.py"]


def test_digest_changes_with_imported_modules_only(fake_package):
    package, script = fake_package
    before = provenance.code_digest([script], package)
    (package / "unrelated.py").write_text("from . import top\nCHANGED = True\n")
    assert provenance.code_digest([script], package) == before
    lazy = package / "lazy.py"
    lazy.write_text("value = 2\n")
    changed = provenance.code_digest([script], package)
    assert changed != before
    lazy.write_text("value = 1\n")
    assert provenance.code_digest([script], package) == before  # a digest of content, not of times
    (package / "sub" / "__init__.py").write_text("'''the sub package'''\nEDITED = 1\n")
    assert provenance.code_digest([script], package) != before  # a package's __init__ is in the closure


CODE = '''"""A module."""
import os


class Scaler:
    """Scales."""

    factor = 2

    def scale(self, value):
        """Doubles ``value``."""
        return value * self.factor  # the factor


async def fetch(path):
    "Reads."
    return os.path.getsize(path)
'''
DOCUMENTATION_ONLY = '''# a new comment line
"""A module, its docstring edited
over two lines."""
import os
class Scaler:
    factor = (
        2
    )
    def scale(self, value):
        'Doubles ``value`` (edited).'
        return value*self.factor   # another comment


async def fetch(path):
    return os.path.getsize(path)
'''


@pytest.mark.parametrize("edit, same", [
    (DOCUMENTATION_ONLY, True),
    (CODE.replace("factor = 2", "factor = 3"), False),
    (CODE.replace("value * self.factor", "self.factor * value"), False),
    (CODE.replace("import os", "import os.path"), False),
    (CODE.replace("return value", "'a string statement that is not a docstring'\n        return value"), False),
    (CODE.replace('        """Doubles ``value``."""\n', ""), True),
    (CODE.replace('"""Scales."""', '"""Scales."""\n    """A second string is code."""'), False),
])
def test_digest_ignores_comments_docstrings_and_formatting_but_not_code(tmp_path, edit, same):
    """The digest is of the syntax tree: a comment, docstring or formatting edit marks no job stale."""
    package = tmp_path / "src" / "pkg"
    write(package / "__init__.py", "")
    module = write(package / "module.py", CODE)
    script = write(tmp_path / "workflow" / "scripts" / "run.py", "from pkg import module\n")
    before = provenance.code_digest([script], package)
    module.write_text(edit)
    assert (provenance.code_digest([script], package) == before) is same


def test_a_file_that_is_not_python_is_digested_by_its_bytes(tmp_path):
    package = tmp_path / "src" / "pkg"
    write(package / "__init__.py", "")
    entry = write(tmp_path / "workflow" / "scripts" / "table.tsv", "# a comment\n")
    before = provenance.code_digest([entry], package)
    entry.write_text("# another comment\n")
    assert provenance.code_digest([entry], package) != before


def test_normalised_tree_keeps_no_docstring_and_no_position():
    tree = provenance.normalised_tree('''"""doc"""\ndef f():\n    """doc"""\n    return 1  # note\n''')
    assert tree == ("Module(body=[FunctionDef(name='f', args=arguments(posonlyargs=[], args=[], kwonlyargs=[], "
                    "kw_defaults=[], defaults=[]), body=[Return(value=Constant(value=1))], decorator_list=[])], "
                    "type_ignores=[])")


def test_digest_does_not_depend_on_where_the_repository_is(fake_package, tmp_path):
    package, script = fake_package
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "src", copy / "src")
    shutil.copytree(tmp_path / "workflow", copy / "workflow")
    assert provenance.describe([copy / "workflow" / "scripts" / "run.py"], copy / "src" / "pkg") == \
        provenance.describe([script], package)
    assert provenance.describe([script], package).endswith(" of workflow/scripts/run.py")


def test_relative_import_in_a_script_is_refused(tmp_path, fake_package):
    package, _ = fake_package
    script = write(tmp_path / "bad.py", "x = 1\nfrom . import top\n")
    with pytest.raises(ValueError, match=r"bad.py, line 2: a relative import outside a package"):
        provenance.import_closure([script], package)


def real_closure(script: str, methods=()) -> set[str]:
    entries = [SCRIPTS / script] + provenance.method_files(methods)
    return {path.relative_to(provenance.PACKAGE_DIR).as_posix()
            for path in provenance.import_closure(entries) if provenance.PACKAGE_DIR in path.parents}


def test_real_rules_closures_are_precise():
    svm = real_closure("svm_full.py")
    assert {"stages/svm_track.py", "evaluation/svm.py", "evaluation/svm_solver.py", "evaluation/ap.py",
            "data/feature_files.py", "core/jobs.py", "__init__.py", "evaluation/__init__.py"} <= svm
    assert "stages/features.py" not in svm  # reading feature files does not depend on the extraction code
    assert not {path for path in svm if path.startswith(("methods/", "engine/"))}
    assert "stages/lowshot_track.py" not in svm and "evaluation/linear_probe.py" not in svm
    rot = real_closure("pretrain.py", ["rot"])
    assert {"methods/rotation.py", "engine/train.py", "stages/pretraining.py", "data/images.py"} <= rot
    assert "methods/odc.py" not in rot and "stages/svm_track.py" not in rot
    assert not {path for path in rot if path.startswith("clustering/")}  # k-means is DC's and ODC's, not ROT's
    assert {"methods/shared_kmeans.py", "clustering/kmeans.py"} <= real_closure("pretrain.py", ["dc"])
    codc = real_closure("pretrain.py", ["codc", "dc"])  # a CODC round with a DC member (methods.built_methods)
    assert {"methods/codc.py", "methods/dc.py", "methods/online_clustering.py"} <= codc
    assert "methods/rotation.py" not in codc
    assert "methods/rotation.py" not in real_closure("extract_features.py")


def test_method_registry_is_read_without_importing_torch():
    code = ("import sys; from ssl_challenge.core import provenance; "
            "print(provenance.method_modules()['rot'], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(REPO / "src")})
    assert result.stdout.split() == ["rotation", "False"]
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['rotnet'\]"):
        provenance.method_files(["rotnet"])


def test_imports_in_nested_blocks_are_found():
    source = """
import a
class C:
    def method(self):
        if True:
            import b
        else:
            from c import d
        try:
            import e
        except ImportError:
            import f
        finally:
            import g
        with open("x"):
            for _ in []:
                while False:
                    import h
        match 1:
            case 1:
                import i
x = [__import__("not_a_statement")]
"""
    assert provenance.imported_names(source, None, False) == {"a", "b", "c", "c.d", "e", "f", "g", "h", "i"}
