"""Regenerate config/README.md (every key of the config schema with its schema default and the embedded default's
value) from the schema and config/config.yaml.

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
EMBEDDED_CONFIG_PATH = REPO / "config" / "config.yaml"
README_PATH = REPO / "config" / "README.md"
NAMED_ENTRY = "<name>"  # a user-named entry of a mapping (a model, a CODC experiment, a concatenation)
NOT_SET = "(not set)"  # the embedded default leaves the key out: the schema default applies
HEADER = f"""# Configuration keys

Every key of `config/config.yaml` (the embedded default), `config/smoke.yaml` and `config/challenge.yaml`. The
schema (`workflow/schemas/config.schema.yaml`) is the source of truth and is checked before any job runs; unknown
keys are rejected. Two columns of values:

- **schema default**: what a key is when a configuration leaves it out (`required`: it must be given);
- **embedded default**: what `config/config.yaml` sets, the value `make all_tracks` runs with. "{NOT_SET}" means
  that it leaves the key out, so the schema default applies. For keys of named entries (`models.<name>`,
  `codc.<name>`) it lists each value with the entries that set it; entries not listed use the schema default.
  Keys that group other keys are left blank there (their keys follow).

`models.<name>` entries are the leaderboard rows, and so are the CODC members after their last round
(`<experiment>@r<round>.<member>`) and the concatenations (`<experiment>@r<round>.concat` and the names of
`concatenations`). A `--configfile` given on the command line replaces `config/config.yaml` instead of extending
it. This file is generated: `.venv/bin/python tools/config_readme.py`.

| key | schema default | embedded default | meaning |
|---|---|---|---|
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
        yield from schema_keys(schema, node["additionalProperties"], f"{path}.{NAMED_ENTRY}", True)


def groups_keys(node: dict) -> bool:
    """Whether the key holds other documented keys (its own rows follow it in the table)."""
    return bool(node.get("properties")) or isinstance(node.get("additionalProperties"), dict)


def values_in(config: object, parts: list[str], entry: tuple[str, ...] = ()):
    """(named entries on the way, value) for every place in ``config`` that sets the key ``parts``; a
    ``<name>`` part stands for every entry of the mapping at that level."""
    if not parts:
        yield entry, config
        return
    if not isinstance(config, dict):
        return
    head, rest = parts[0], parts[1:]
    if head == NAMED_ENTRY:
        for name, child in config.items():
            yield from values_in(child, rest, (*entry, str(name)))
    elif head in config:
        yield from values_in(config[head], rest, entry)


def code(value: object) -> str:
    return f"`{json.dumps(value)}`"


def embedded_value(config: dict, path: str, node: dict) -> str:
    """The embedded default's cell for one key: its value, the values per named entry, blank for a key that
    groups other keys, or NOT_SET."""
    if groups_keys(node):
        return ""
    found = list(values_in(config, path.split(".")))
    if not found:
        return NOT_SET
    if NAMED_ENTRY not in path:
        return code(found[0][1])
    entries_by_value: dict[str, list[str]] = {}
    for entry, value in found:
        entries_by_value.setdefault(code(value), []).append(".".join(entry))
    return "; ".join(f"{value} ({', '.join(entries)})" for value, entries in entries_by_value.items())


def render(schema: dict, embedded: dict) -> str:
    rows = []
    for path, node, _required in schema_keys(schema):
        default = code(node["default"]) if "default" in node else "`required`"
        meaning = " ".join(str(node.get("description", "")).split())
        cells = [f"`{path}`", default, embedded_value(embedded, path, node), meaning]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    text = render(yaml.safe_load(SCHEMA_PATH.read_text()), yaml.safe_load(EMBEDDED_CONFIG_PATH.read_text()))
    if "--check" in argv:
        if README_PATH.read_text() != text:
            print(f"{README_PATH} is out of date: run .venv/bin/python tools/config_readme.py", file=sys.stderr)
            return 1
        return 0
    README_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
