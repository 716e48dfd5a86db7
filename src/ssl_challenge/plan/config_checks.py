"""Validation of the workflow's configuration before any job runs (torch-free: the Snakefile calls it).

``validate_config`` does what ``snakemake.utils.validate`` does (JSON-schema validation that fills in the schema's
defaults), but a violation is reported in a few lines: the key path, its value, what is wrong and that key's
description from the schema, instead of the whole schema. It then checks what a JSON schema cannot say: every
number is finite (YAML's ``.nan`` and ``.inf`` are numbers to JSON schema), every model's ``snapshot_epochs`` are
epochs that run, every model's method_options are its method's (the method's declaration checks them, the one
check of a method's options: ``methods.parse_options``), and the keys that name other keys name things that exist
(:func:`check_references`).
``check_data_sources`` then checks the data on disk (rules/common.smk calls it).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from . import planning
from .. import methods
from ..core.config import ConfigError
from ..data import layouts
from ..methods import codc_options as codc

VALUE_CHARACTERS = 120  # a value shown in an error is cut to this length


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Validate ``config`` in place against the schema at ``schema_path``, filling in defaults; then the finite
    numbers, the snapshot epochs and the references between keys. Returns ``config``; raises
    :class:`ConfigError` naming the key."""
    schema = read_schema(schema_path)
    check_schema(config, schema)
    check_finite_numbers(config, schema)
    check_snapshot_epochs(config)
    check_references(config)
    return config


def read_schema(schema_path: str | os.PathLike) -> dict:
    """The schema at ``schema_path``, parsed once per version of the file (not to be modified)."""
    path = Path(schema_path).resolve()
    return _parsed_schema(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parsed_schema(path: str, mtime_ns: int) -> dict:
    return yaml.safe_load(Path(path).read_text())


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
                    instance.setdefault(key, copy.deepcopy(child["default"]))  # not one dict shared by all
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


def check_references(config: dict) -> None:
    """Keys that name models, experiments or layers name ones that exist (a validated config, defaults filled)."""
    if not config["models"]:
        raise ConfigError("config key 'models' is empty: name at least one model to pretrain and evaluate")
    if planning.CONCAT in config["models"] or planning.CONCAT in config["concatenations"]:
        raise ConfigError(f"config key 'models.{planning.CONCAT}' (or 'concatenations.{planning.CONCAT}'): the name "
                          f"is reserved for CODC concatenations (codc2@r1.{planning.CONCAT}); rename the entry")
    check_method_options(config)
    check_codc_experiments(config)
    check_pseudo_label_models(config)
    trained = planning.trained_models(config)
    for name, members in config["concatenations"].items():
        if name in config["models"]:
            raise ConfigError(f"config key 'concatenations.{name}': {name!r} is already a configured model; "
                              "rename the concatenation")
        unknown = [member for member in members if member not in trained]
        if unknown:
            raise ConfigError(f"config key 'concatenations.{name}': {unknown} are not models (configured models or "
                              f"CODC members after a round, one of {trained})")
    check_ablation(config)
    check_track_layers(config)
    if config["evaluation"]["imagenet_linear"]["enabled"] and config["data"]["source"] == "embedded":
        raise ConfigError(
            "config key 'evaluation.imagenet_linear.enabled' is true, but the embedded data set has no ImageNet "
            "val/ split: set data.source to real with an imagenet_root holding train/<wnid>/ and val/<wnid>/")
    if config["data"]["source"] == "real":
        for key in ("imagenet_root", "voc07_root", "places205_root"):
            if not config["data"][key]:
                raise ConfigError(f"config key 'data.{key}' is empty but data.source is 'real': point it at the "
                                  "data set's root")


def check_codc_experiments(config: dict) -> None:
    """Members are configured models with a pretext loss; start_from names another experiment, without a cycle."""
    experiments = config["codc"]
    for name, experiment in experiments.items():
        for member in experiment["members"]:
            if member not in config["models"]:
                raise ConfigError(f"config key 'codc.{name}.members': {member!r} is not a configured model")
            method = config["models"][member]["method"]
            if method not in methods.pretext_methods():
                raise ConfigError(f"config key 'codc.{name}.members': {member!r} has method {method!r}; a CODC "
                                  f"member needs a pretext loss, one of {methods.pretext_methods()}")
        with naming_the_key():
            codc.check_experiment(experiment, f"codc.{name}")
        start = experiment["start_from"]
        if start and (start not in experiments or start == name):
            raise ConfigError(f"config key 'codc.{name}.start_from': {start!r} is not another CODC experiment")
    for name in experiments:
        chain = [name]
        while experiments[chain[-1]]["start_from"]:
            chain.append(experiments[chain[-1]]["start_from"])
            if chain[-1] in chain[:-1]:
                raise ConfigError(f"config key 'codc.{name}.start_from': a cycle {' -> '.join(chain)}; an "
                                  "experiment must start from one that does not start from it")


def check_method_options(config: dict) -> None:
    """Each configured model's method_options are its method's: known keys of the right types, values its
    declaration accepts (checks that need the number of training images follow when the method is built)."""
    for name, model in config["models"].items():
        with naming_the_key():
            methods.parse_options(model["method"], model["method_options"], f"models.{name}.method_options")


def check_pseudo_label_models(config: dict) -> None:
    """A model's pseudo-labels (CLS) cluster the features of models that are trained (configured, or CODC members
    after a round)."""
    trained = planning.trained_models(config)
    for name in planning.models_with_pseudo_labels(config):
        request = planning.pseudo_labels(config, name)
        unknown = [model for model in request.models if model not in trained]
        if unknown:
            raise ConfigError(f"config key 'models.{name}.method_options.{request.models_option}': {unknown} are "
                              f"neither configured models nor CODC members after a round (one of {trained})")


@contextlib.contextmanager
def naming_the_key() -> Iterator[None]:
    """A method's ConfigError (``models.rot.method_options.x: problem``) as the config checks word theirs."""
    try:
        yield
    except ConfigError as error:
        key, _, problem = str(error).partition(": ")
        raise ConfigError(f"config key '{key}': {problem}") from None


def check_ablation(config: dict) -> None:
    """The ablation table's experiments are CODC experiments; each control is a control experiment."""
    experiments, ablation = config["codc"], config["ablation"]
    for name in ablation["experiments"]:
        if name not in experiments:
            raise ConfigError(f"config key 'ablation.experiments': {name!r} is not a CODC experiment")
    for name, control in ablation["controls"].items():
        if name not in ablation["experiments"]:
            raise ConfigError(f"config key 'ablation.controls.{name}': {name!r} is not in ablation.experiments")
        if control not in experiments or not codc.is_control(experiments[control]):
            raise ConfigError(f"config key 'ablation.controls.{name}': {control!r} must be a CODC experiment with "
                              f"{codc.CONTROL}")


def check_track_layers(config: dict) -> None:
    """Tracks that read extracted features ask for layers that are extracted (features.layers)."""
    extracted = config["features"]["layers"]
    tracks = ["voc07_svm", "voc07_lowshot"]
    if config["evaluation"]["places205_linear"]["mode"] == "cached":
        tracks.append("places205_linear")  # online, every probe (a concatenation's too) runs trunks
    for track in tracks:
        missing = [layer for layer in config["evaluation"][track]["layers"] if layer not in extracted]
        if missing:
            raise ConfigError(f"config key 'evaluation.{track}.layers': {missing} are not in features.layers "
                              f"{extracted}; add them there (or remove them here)")


def check_data_sources(config: dict, embedded_built: bool) -> None:
    """The data on disk: the Fashion-MNIST files of the embedded build (unless ``embedded_built``), or the real
    roots' layouts, and the challenge's published low-shot samples when a folder is set. Raises naming the config
    key and what is missing."""
    check_published_lowshot_samples(config["evaluation"]["voc07_lowshot"])
    data = config["data"]
    if data["source"] == "embedded":
        folder = data["embedded"]["fashion_mnist_dir"]
        missing = [] if embedded_built else layouts.missing_fashion_mnist_files(folder)
        if missing:
            raise ConfigError(f"config key 'data.embedded.fashion_mnist_dir' = {folder!r} lacks {missing}: install "
                              "Debian's dataset-fashion-mnist (`make data`), or point the key at a folder with the "
                              "four IDX files")
        return
    layouts.check_imagenet_root(data["imagenet_root"])
    layouts.check_voc07_root(data["voc07_root"], data["voc07_classes"] or None)
    layouts.check_places205_root(data["places205_root"])
    if config["evaluation"]["imagenet_linear"]["enabled"]:
        layouts.check_imagenet_root(data["imagenet_root"], "val")


def check_published_lowshot_samples(lowshot: dict) -> None:
    """``evaluation.voc07_lowshot.published_samples``, when set: the folder exists and holds
    train_targets_sample<s>_k<k>.json for every sample s in 1..num_samples and every k of k_values."""
    folder = lowshot.get("published_samples") or ""
    if not folder:
        return
    key = "config key 'evaluation.voc07_lowshot.published_samples'"
    if not Path(folder).is_dir():
        raise ConfigError(f"{key} = {folder!r}: the folder does not exist; point it at the challenge's "
                          "low_shot_voc07/low_shot_train/ folder (or set it to \"\" to draw the samples)")
    from ..evaluation.lowshot import published_sample_path  # only when set: it imports the SVM code

    missing = [published_sample_path(folder, sample, k).name for k in lowshot["k_values"]
               for sample in range(1, lowshot["num_samples"] + 1)
               if not published_sample_path(folder, sample, k).is_file()]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ConfigError(f"{key} = {folder!r} lacks {shown} (samples 1..{lowshot['num_samples']} of k_values "
                          f"{list(lowshot['k_values'])}); or remove those k from evaluation.voc07_lowshot.k_values")


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
