"""Regenerate config/README.md (every key of the config schema with its default) from the schema.

    .venv/bin/python tools/config_readme.py          # rewrite config/README.md
    .venv/bin/python tools/config_readme.py --check  # exit 1 when it is out of date (tests run this)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
README_PATH = REPO / "config" / "README.md"
HEADER = """# Configuration keys

Every key of `config/config.yaml` (the embedded default), `config/smoke.yaml` and `config/challenge.yaml`, with
its default. The schema (`workflow/schemas/config.schema.yaml`) is the source of truth and is checked before any
job runs; unknown keys are rejected. `models.<name>` entries are the leaderboard rows, and so are the CODC members
after their last round (`<experiment>@r<round>.<member>`) and the concatenations (`<experiment>@r<round>.concat`
and the names of `concatenations`). A `--configfile` given on the command line replaces `config/config.yaml`
instead of extending it. This file is generated: `.venv/bin/python tools/config_readme.py`.

| key | default | meaning |
|---|---|---|
"""


def schema_keys(schema: dict, node: dict | None = None, path: str = "", required: bool = False):
    """(dotted key, schema node, required) for every property, following local $refs."""
    node = schema if node is None else node
    if "$ref" in node:
        definition = schema["definitions"][node["$ref"].split("/")[-1]]
        node = {**definition, **{key: value for key, value in node.items() if key != "$ref"}}
    if path:
        yield path, node, required
    for key, child in node.get("properties", {}).items():
        yield from schema_keys(schema, child, f"{path}.{key}" if path else key, key in node.get("required", []))
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(schema, node["additionalProperties"], f"{path}.<name>", True)


def render(schema: dict) -> str:
    rows = []
    for path, node, required in schema_keys(schema):
        default = f"`{json.dumps(node['default'])}`" if "default" in node else "`required`"
        meaning = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {default} | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    text = render(yaml.safe_load(SCHEMA_PATH.read_text()))
    if "--check" in argv:
        if README_PATH.read_text() != text:
            print(f"{README_PATH} is out of date: run .venv/bin/python tools/config_readme.py", file=sys.stderr)
            return 1
        return 0
    README_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
