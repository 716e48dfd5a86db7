"""The workflow's config check: defaults filled as snakemake's validate fills them, a short message naming the key,
its value and its description for a schema violation, and what the schema cannot say (finite numbers, snapshot
epochs that run)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from ssl_challenge.core.config import ConfigError
from ssl_challenge.plan.config_checks import validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def rejected(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA)
    return str(error.value)


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "challenge.yaml"])
def test_defaults_are_filled_exactly_as_snakemakes_validate_fills_them(name):
    raw = yaml.safe_load((REPO / "config" / name).read_text())
    theirs, ours = copy.deepcopy(raw), copy.deepcopy(raw)
    validate(theirs, str(SCHEMA))
    assert validate_config(ours, SCHEMA) is ours
    assert ours == theirs and ours != raw  # defaults were added, the same ones


@pytest.mark.parametrize("text, key", [(".nan", "lr"), (".inf", "lr"), (".inf", "weight_decay"), (".nan", "momentum")])
def test_nan_and_infinity_are_rejected_naming_the_key(tmp_path, text, key):
    config = smoke_config()
    name = next(iter(config["models"]))
    config["models"][name]["optimizer"][key] = "PLACEHOLDER"
    config = yaml.safe_load(yaml.safe_dump(config).replace("PLACEHOLDER", text))  # what YAML gives for .nan/.inf
    message = rejected(config)
    assert message.startswith(f"config key 'models.{name}.optimizer.{key}' = ")
    assert "expected a finite number (NaN and infinity are not allowed)" in message


def test_non_finite_numbers_in_lists_name_the_index():
    config = smoke_config()
    config.setdefault("evaluation", {}).setdefault("voc07_svm", {})["costs"] = [1.0, float("inf")]
    message = rejected(config)
    assert message.splitlines()[0] == ("config key 'evaluation.voc07_svm.costs[1]' = inf: expected a finite number "
                                       "(NaN and infinity are not allowed)")
    assert "'evaluation.voc07_svm.costs': User SVM costs" in message


@pytest.mark.parametrize("snapshots", [[2, 7], [5, 6]])
def test_snapshot_epochs_beyond_the_training_are_rejected_before_any_job(snapshots):
    config = smoke_config()
    name = next(name for name, model in config["models"].items() if model["epochs"] >= 2)
    epochs = config["models"][name]["epochs"]
    config["models"][name]["snapshot_epochs"] = [epoch + epochs - 2 for epoch in snapshots]
    message = rejected(config)
    assert message.startswith(f"config key 'models.{name}.snapshot_epochs' = ")
    assert f"outside 1..{epochs} (models.{name}.epochs = {epochs})" in message


def test_a_schema_violation_is_a_few_lines_with_the_keys_description():
    config = smoke_config()
    name = next(iter(config["models"]))
    config["models"][name]["optimizer"]["lr"] = "fast"
    message = rejected(config)
    assert message.splitlines() == [
        f"config key 'models.{name}.optimizer.lr' = 'fast': 'fast' is not of type 'number'",
        f"'models.{name}.optimizer.lr': Base learning rate.",
        "Every key is documented in config/README.md.",
    ]


def test_an_unknown_key_is_named_with_the_known_ones():
    config = smoke_config()
    name = next(iter(config["models"]))
    config["models"][name]["epohcs"] = 3
    message = rejected(config)
    assert message.startswith(f"config key 'models.{name}.epohcs' = 3: unknown key(s) ['epohcs'] under "
                              f"'models.{name}'; expected some of ['augmentation', 'backbone', 'batch_size'")
    assert len(message) < 600
