"""tools/config_readme.py: config/README.md shows each key's schema default beside the embedded default's value."""
from __future__ import annotations

import importlib.util

import yaml

from conftest import REPO

SPEC = importlib.util.spec_from_file_location("config_readme", REPO / "tools" / "config_readme.py")
config_readme = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(config_readme)

SCHEMA = yaml.safe_load("""
properties:
  data:
    type: object
    default: {}
    description: A group.
    properties:
      images: {type: integer, default: 20000, description: Images.}
      root: {type: string, default: "", description: "A root | with a pipe."}
  models:
    type: object
    default: {}
    description: Named entries.
    additionalProperties:
      type: object
      description: One model.
      required: [epochs]
      properties:
        epochs: {type: integer, description: Epochs.}
        batch_size: {type: integer, default: 256, description: Batch.}
""")
EMBEDDED = {"data": {"images": 10000},
            "models": {"random": {"epochs": 0}, "rot": {"epochs": 4, "batch_size": 128},
                       "dc": {"epochs": 8, "batch_size": 128}, "odc": {"epochs": 8}}}


def rows(schema=SCHEMA, embedded=EMBEDDED) -> dict[str, list[str]]:
    table = config_readme.render(schema, embedded).split("|---|---|---|---|\n", 1)[1]
    cells = {}
    for line in table.splitlines():
        parts = [cell.strip() for cell in line.strip("|").split(" | ")]
        cells[parts[0].strip("`")] = parts[1:]
    return cells


def test_a_key_set_by_the_embedded_default_shows_both_values():
    assert rows()["data.images"] == ["`20000`", "`10000`", "Images."]


def test_a_key_the_embedded_default_leaves_out_is_marked_not_set():
    assert rows()["data.root"][:2] == ['`""`', config_readme.NOT_SET]
    assert rows()["data.root"][2] == "A root \\| with a pipe."


def test_a_key_that_groups_other_keys_has_a_blank_embedded_cell():
    assert rows()["data"][:2] == ["`{}`", ""]
    assert rows()["models.<name>"][:2] == ["`required`", ""]


def test_named_entries_are_listed_per_value_in_the_embedded_default_s_order():
    assert rows()["models.<name>.epochs"][1] == "`0` (random); `4` (rot); `8` (dc, odc)"
    assert rows()["models.<name>.batch_size"] == ["`256`", "`128` (rot, dc)", "Batch."]


def test_the_shipped_readme_shows_the_embedded_default_beside_the_schema():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    embedded = yaml.safe_load((REPO / "config/config.yaml").read_text())
    shipped = rows(schema, embedded)
    # The two defaults that differ (issue: the README's one "default" column held only the schema's).
    assert shipped["data.embedded.pretrain_images"][:2] == [
        f"`{schema['properties']['data']['properties']['embedded']['properties']['pretrain_images']['default']}`",
        f"`{embedded['data']['embedded']['pretrain_images']}`"]
    assert shipped["evaluation.voc07_svm.costs"][1] == f"`{embedded['evaluation']['voc07_svm']['costs']}`"
    assert shipped["models.<name>.epochs"][1].startswith(f"`{embedded['models']['random']['epochs']}` (random")
