"""The config schema documents every key, config/README.md lists them, and the shipped configs validate."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def schema_keys(node=SCHEMA, path="", required=False):
    """(dotted key, schema node, required) for every property, following local $refs.

    A required key (or a user-named entry such as a model) needs no default; every other key does.
    """
    if "$ref" in node:
        node = {**SCHEMA["definitions"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if path:
        yield path, node, required
    for key, child in node.get("properties", {}).items():
        yield from schema_keys(child, f"{path}.{key}" if path else key, key in node.get("required", []))
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(node["additionalProperties"], f"{path}.<name>", True)


def test_every_key_is_described_defaulted_and_documented():
    readme = (REPO / "config" / "README.md").read_text()
    for path, node, required in schema_keys():
        assert node.get("description"), f"{path} has no description"
        assert "default" in node or required, f"{path} has no default"
        assert f"`{path}`" in readme, f"{path} is missing from config/README.md"


def test_config_readme_is_generated_from_the_current_schema():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "config_readme.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "challenge.yaml"])
def test_shipped_configs_validate(name):
    # Each is complete on its own: a --configfile on the command line replaces config/config.yaml.
    validate(yaml.safe_load((REPO / "config" / name).read_text()), str(SCHEMA_PATH))
