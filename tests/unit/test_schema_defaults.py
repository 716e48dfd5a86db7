"""Defaults live in the schema (workflow/schemas/config.schema.yaml). Where a library dataclass that reads a config
section carries defaults too (so that a script or a test may build it from a partial dict), they must be the
schema's: a default changed in one place only would make results depend on the path a value took."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ssl_challenge.data.transforms import AugmentationConfig, ColorJitterConfig
from ssl_challenge.detection.model import DetectorConfig
from ssl_challenge.engine.settings import OptimizerConfig, PretrainConfig, ScheduleConfig
from ssl_challenge.evaluation.linear_probe import LinearProbeConfig
from ssl_challenge.methods.cls_options import ClsOptions
from ssl_challenge.methods.codc_options import CODCOptions

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text())


def node(path: str) -> dict:
    """The schema node at a slash-separated path, local $refs followed."""
    current = SCHEMA
    for part in path.split("/"):
        current = current[part]
        while "$ref" in current:
            target = SCHEMA
            for ref_part in current["$ref"].lstrip("#/").split("/"):
                target = target[ref_part]
            current = {**target, **{key: value for key, value in current.items() if key != "$ref"}}
    return current


def plain(value):
    """Tuples as lists and dataclasses as dicts, as the schema writes them."""
    if dataclasses.is_dataclass(value):
        return {key: plain(item) for key, item in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def schema_default(properties: dict, key: str):
    """A key's default; an object defaulting to {} gets its own properties' defaults (as validation fills them)."""
    child = properties[key]
    if child.get("default") == {} and "properties" in child:
        return {name: schema_default(child["properties"], name) for name in child["properties"]}
    return child["default"]


def dataclass_defaults(cls) -> dict:
    defaults = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = plain(field.default_factory())
    return defaults


@pytest.mark.parametrize("cls, schema_path", [
    (PretrainConfig, "definitions/model/properties"),
    (OptimizerConfig, "definitions/optimizer/properties"),
    (ScheduleConfig, "definitions/schedule/properties"),
    (AugmentationConfig, "definitions/model/properties/augmentation/properties"),
    (ColorJitterConfig, "definitions/model/properties/augmentation/properties/color_jitter/properties"),
    (CODCOptions, "definitions/codc_experiment/properties"),
    (LinearProbeConfig, "properties/evaluation/properties/places205_linear/properties"),
    (LinearProbeConfig, "properties/evaluation/properties/imagenet_linear/properties"),
    (DetectorConfig, "properties/evaluation/properties/voc07_detection/properties"),
])
def test_dataclass_defaults_are_the_schemas(cls, schema_path):
    properties = node(schema_path)
    shared = {key: value for key, value in dataclass_defaults(cls).items() if "default" in properties.get(key, {})}
    assert shared, f"{cls.__name__} shares no defaulted key with {schema_path}"
    assert shared == {key: schema_default(properties, key) for key in shared}


def test_the_pca_dims_of_cls_labels_default_as_those_of_codc_labels():
    """CLS options are the method's (the schema leaves method_options to it; the planner reads them through the
    method's declaration); both kinds of pseudo-labels whiten to the same dimensions by default."""
    assert ClsOptions.pca_dims == node("definitions/codc_experiment/properties")["pca_dims"]["default"] == 256
