"""Validation of the workflow's configuration before any job runs (torch-free: the Snakefile calls it).

``validate_config`` does what ``snakemake.utils.validate`` does (JSON-schema validation that fills in the schema's
defaults), but a violation is reported in a few lines: the key path, its value, what is wrong and that key's
description from the schema, instead of the whole schema. It then checks what a JSON schema cannot say: every
number is finite (YAML's ``.nan`` and ``.inf`` are numbers to JSON schema), and every model's ``snapshot_epochs``
are epochs that run.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from .config import ConfigError

VALUE_CHARACTERS = 120  # a value shown in an error is cut to this length


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config`` in place against the schema at ``schema_path``, filling in defaults; then the finite
    numbers and the snapshot epochs. Returns ``config``; raises :class:`ConfigError` naming the key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    check_schema(config, schema)
    check_finite_numbers(config, schema)
    check_snapshot_epochs(config)
    return config


def check_schema(config: dict, schema: dict) -> None:
    """JSON-schema validation with defaults filled in (as ``snakemake.utils.validate(config, schema)``); the most
    relevant violation is raised as a :class:`ConfigError` of a few lines."""
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import best_match

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults_then_check(validator, properties, instance, node):
        if isinstance(instance, dict):
            for key, child in properties.items():
                if "default" in child:
                    instance.setdefault(key, child["default"])
        yield from check_properties(validator, properties, instance, node)

    validator_class = validators.extend(Draft202012Validator, {"properties": fill_defaults_then_check})
    error = best_match(validator_class(schema).iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(key for key in error.instance if key not in known)
        raise ConfigError(describe([*path, unknown[0]], error.instance[unknown[0]],
                                   f"unknown key(s) {unknown} under '{dotted(path)}'; expected some of {known}",
                                   schema))
    raise ConfigError(describe(path, error.instance, error.message, schema))


def check_finite_numbers(config: dict, schema: dict) -> None:
    """Every number of the config is finite (NaN and infinity pass any JSON-schema bound)."""
    for path, value in numbers(config):
        if not math.isfinite(value):
            raise ConfigError(describe(path, value, "expected a finite number (NaN and infinity are not allowed)",
                                       schema))


def check_snapshot_epochs(config: dict) -> None:
    """Snapshots are taken after epochs that run: each entry of ``models.<name>.snapshot_epochs`` is in
    ``1..epochs``. Found here, before training, not as a missing file after it."""
    for name, model in config.get("models", {}).items():
        epochs = model.get("epochs", 0)
        outside = [epoch for epoch in model.get("snapshot_epochs", []) if not 0 < epoch <= epochs]
        if outside:
            raise ConfigError(f"config key 'models.{name}.snapshot_epochs' = {model['snapshot_epochs']}: "
                              f"{outside} outside 1..{epochs} (models.{name}.epochs = {epochs}); a snapshot is "
                              "taken after an epoch that runs: remove them or raise epochs")


def numbers(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """(key path, number) for every int/float in a nest of dicts and lists (booleans are not numbers here)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from numbers(item, (*path, index))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def describe(path: Sequence, value: Any, problem: str, schema: dict) -> str:
    """``config key 'a.b[0]' = value: problem`` and the key's description from the schema."""
    key = dotted(path)
    shown = repr(value)
    if len(shown) > VALUE_CHARACTERS:
        shown = shown[:VALUE_CHARACTERS] + "..."
    if len(problem) > 2 * VALUE_CHARACTERS:
        problem = problem[:2 * VALUE_CHARACTERS] + "..."
    lines = [f"config key '{key}' = {shown}: {problem}"]
    description = key_description(schema, path)
    if description:
        lines.append(f"'{description[0]}': {description[1]}")
    lines.append("Every key is documented in config/README.md.")
    return "\n".join(lines)


def dotted(path: Sequence) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the whole configuration)"


def key_description(schema: dict, path: Sequence) -> tuple[str, str] | None:
    """(dotted key, description) of the deepest key along ``path`` that the schema describes."""
    node, found = schema, None
    for depth, part in enumerate(path):
        node = resolve(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            break
        node = resolve(schema, node)
        if node.get("description"):
            found = (dotted(path[:depth + 1]), " ".join(str(node["description"]).split()))
    return found


def resolve(schema: dict, node: dict) -> dict:
    """``node`` with a local ``$ref`` ("#/definitions/name") replaced by its target (sibling keys kept)."""
    if not isinstance(node, dict) or "$ref" not in node:
        return node if isinstance(node, dict) else {}
    target = schema
    for part in node["$ref"].lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{key: value for key, value in node.items() if key != "$ref"}}
