"""docs/adding-a-method.md is the recipe this test follows: it reads the page's code blocks, writes them into a
scratch copy of the workflow (two modules, the registry line, the schema's enum), and then, with nothing else
edited, the planner accepts the method as a model and as a CODC member, its options are checked before any job
runs, and its pretraining job trains it for real on tiny smoke data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, copy_workflow, run_snakemake
from dryrun import planned_jobs

pytestmark = pytest.mark.slow
RECIPE = REPO / "docs" / "adding-a-method.md"
REGISTRY = "src/ssl_challenge/methods/__init__.py"
SCHEMA = "workflow/schemas/config.schema.yaml"


def recipe_blocks() -> list[tuple[str, str]]:
    """(the first line, the rest) of each fenced code block of the recipe."""
    blocks = re.findall(r"^```(?:python|yaml)\n(.*?)^```", RECIPE.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [tuple(block.split("\n", 1)) for block in blocks]


def follow_recipe(workdir: Path) -> dict:
    """Apply every block of the recipe to ``workdir``; returns the config's models entry the recipe gives."""
    models = None
    for header, body in recipe_blocks():
        if header.startswith("# file: "):
            path = workdir / header.removeprefix("# file: ")
            assert not path.exists(), f"the recipe's {path.name} would overwrite a file of the workflow"
            path.write_text(body)
        elif header == f"# in {REGISTRY}, METHODS:":
            registry = workdir / REGISTRY
            text = registry.read_text()
            assert text.count("METHODS = {\n") == 1
            registry.write_text(text.replace("METHODS = {\n", "METHODS = {\n" + body, 1))
        elif header.startswith(f"# in {SCHEMA}, definitions.model.properties.method:"):
            schema = workdir / SCHEMA
            text, count = re.subn(r"^ *enum: \[random, .*\]\n", body, schema.read_text(), flags=re.MULTILINE)
            assert count == 1, "the schema's method enum is not where the recipe says"
            schema.write_text(text)
        elif header == "# in a config, models:":
            models = yaml.safe_load(body)
        else:
            raise AssertionError(f"{RECIPE.name}: a code block this test does not know how to follow: {header!r}")
    assert models is not None, f"{RECIPE.name} gives no model entry"
    return models


def tiny_config(workdir: Path, models: dict, path: Path) -> Path:
    """The smoke config at its smallest: the recipe's model beside rot, and a CODC experiment of the two."""
    config = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    config["data"]["embedded"].update(pretrain_images=64, voc_trainval=10, voc_test=10, places_train=10,
                                      places_val=10)
    config["models"] = {**models, "rot": config["models"]["rot"]}
    config["codc"]["codc2"]["members"] = [*models, "rot"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def recipe_workflow(tmp_path_factory) -> tuple[Path, str, Path]:
    """(a copy of the workflow with the recipe applied, the new model's name, its tiny config)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("adding_a_method") / "workflow")
    models = follow_recipe(workdir)
    (name,) = models
    return workdir, name, tiny_config(workdir, models, workdir / "tiny.yaml")


def test_the_planner_takes_the_new_method_as_a_model_and_as_a_codc_member(recipe_workflow):
    workdir, name, config = recipe_workflow
    member = f"results/models/codc2@r1.{name}/model.pth"
    jobs = planned_jobs(run_snakemake(workdir, "-n", member, "--configfile", str(config)).stdout)
    assert sorted((job.rule, job.model or dict(job.wildcards).get("member")) for job in jobs) == sorted([
        ("prepare_data", None), ("pretrain", name), ("pretrain", "rot"), ("codc_labels", name),
        ("codc_round", name)])


def test_its_options_are_checked_before_any_job_runs(recipe_workflow, tmp_path):
    workdir, name, config_path = recipe_workflow
    config = yaml.safe_load(config_path.read_text())
    config["models"][name]["method_options"] = {"head_init_std": -1.0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_snakemake(workdir, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert result.returncode != 0
    assert (f"config key 'models.{name}.method_options.head_init_std': expected > 0, got -1.0"
            in result.stdout + result.stderr)


def test_its_pretraining_job_trains_it(recipe_workflow):
    workdir, name, config = recipe_workflow
    model = workdir / "results" / "models" / name / "model.pth"
    jobs = planned_jobs(run_snakemake(workdir, "-n", str(model.relative_to(workdir)), "--configfile",
                                      str(config)).stdout)
    assert sorted(job.rule for job in jobs) == ["prepare_data", "pretrain"]
    run_snakemake(workdir, "--cores", "1", str(model.relative_to(workdir)), "--configfile", str(config))
    saved = torch.load(model, map_location="cpu", weights_only=True)
    assert saved["method"] == name and saved["epochs"] == 1
    records = [json.loads(line) for line in (model.parent / "metrics.jsonl").read_text().splitlines()]
    epochs = [record for record in records if record["kind"] == "epoch"]
    assert len(epochs) == 1 and 0.0 <= epochs[0]["flip_accuracy"] <= 1.0  # the method's own log, averaged
    assert run_snakemake(workdir, "-n", str(model.relative_to(workdir)), "--configfile", str(config)).stdout.count(
        "rule ") == 0  # up to date
