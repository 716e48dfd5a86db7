"""The CODC ablation table: structure, cell placement, the separate published section."""
from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from ssl_challenge.reporting.codc_ablation import (codc_ablation_table, published_codc_ablation, write_codc_ablation,
                                                write_codc_ablation_from_results)


def entry(experiment, member, stage, value):
    return {"experiment": experiment, "member": member, "stage": stage, "voc07_svm": value}


ENTRIES = [
    entry("2 models", "DC", "before", 10.0), entry("2 models", "ROT", "before", 11.0),
    entry("2 models", "DC", "after", 20.0), entry("2 models", "ROT", "after", 21.0),
    entry("2 models", "concat", "concatenate", 30.0),
    entry("2 models", "DC", "control_after", 40.0), entry("2 models", "ROT", "control_after", 41.0),
    entry("2 models", "concat", "control_concatenate", 50.0),
    entry("3 models", "CLS", "before", 12.0), entry("3 models", "DC", "after", 22.0),
    entry("3 models", "ROT", "after", 23.0), entry("3 models", "CLS", "after", 24.0),
    entry("3 models", "", "concatenate", 31.0),
]


def cell(frame, stage, column):
    return frame.loc[frame["stage"] == stage, column].item()


def test_codc_table_places_values_by_stage_and_member():
    frame = codc_ablation_table(ENTRIES)
    assert list(frame.columns) == ["stage", "2 models: DC", "2 models: ROT", "3 models: CLS", "3 models: DC",
                                   "3 models: ROT"]
    assert list(frame["stage"]) == ["before CODC", "after CODC", "concatenate",
                                    "control (label_source: self): after CODC",
                                    "control (label_source: self): concatenate"]
    assert cell(frame, "before CODC", "2 models: ROT") == 11.0
    assert cell(frame, "after CODC", "3 models: CLS") == 24.0
    assert cell(frame, "concatenate", "2 models: DC") == 30.0  # a concatenation: the experiment's first column
    assert pd.isna(cell(frame, "concatenate", "2 models: ROT"))
    assert cell(frame, "concatenate", "3 models: CLS") == 31.0
    assert cell(frame, "control (label_source: self): after CODC", "2 models: ROT") == 41.0
    assert pd.isna(cell(frame, "before CODC", "3 models: DC"))


def test_codc_table_refuses_bad_entries():
    with pytest.raises(ValueError, match="unknown stage 'during'"):
        codc_ablation_table([entry("2 models", "DC", "during", 1.0)])
    with pytest.raises(ValueError, match="two values for stage 'after' of '2 models: DC'"):
        codc_ablation_table([entry("2 models", "DC", "after", 1.0), entry("2 models", "DC", "after", 2.0)])
    with pytest.raises(ValueError, match="missing key"):
        codc_ablation_table([{"experiment": "2 models", "member": "DC", "stage": "after"}])


def test_published_figures_are_the_seeds_and_kept_separate(tmp_path):
    published = published_codc_ablation()
    assert cell(published, "before CODC", "2 models: DC") == 69.12
    assert cell(published, "after CODC", "2 models: ROT") == 74.54
    assert cell(published, "concatenate", "2 models: DC") == 76.33
    assert cell(published, "before CODC", "3 models: CLS") == 77.7
    assert pd.isna(cell(published, "before CODC", "3 models: DC"))  # not published: never invented
    assert cell(published, "after CODC", "3 models: ROT") == 72.94
    assert cell(published, "concatenate", "3 models: DC") == 79.82

    outputs = [str(tmp_path / f"codc_ablation{suffix}") for suffix in (".csv", ".md", ".tex")]
    write_codc_ablation(codc_ablation_table(ENTRIES), outputs)
    combined = pd.read_csv(outputs[0])
    measured, reference = combined[combined.section == "measured"], combined[combined.section == "published"]
    assert len(measured) == 5 and len(reference) == 3
    assert 69.12 not in measured.drop(columns=["stage", "section"]).to_numpy()
    markdown = (tmp_path / "codc_ablation.md").read_text()
    measured_part, published_part = markdown.split("## Published reference figures")
    assert "69.12" not in measured_part and "69.12" in published_part and "79.82" in published_part
    assert "30.00" in measured_part and "30.00" not in published_part
    assert "seed slides" in published_part
    assert ("Selected on test data, as in the reference protocol. VOC07 SVM: each model's layer with the best test "
            "mAP") in measured_part and "Selected" not in published_part
    tex = (tmp_path / "codc_ablation.tex").read_text()
    assert tex.count(r"\begin{table}") == 2 and "not measured here" in tex
    assert tex.count("Selected on test data") == 1 and tex.index("Selected") < tex.index("not measured here")


def test_ablation_from_result_files_takes_each_cells_best_layer(tmp_path):
    def results(name, maps):
        paths = []
        for layer, value in maps.items():
            path = tmp_path / f"{name}_{layer}.json"
            path.write_text(json.dumps({"layer": layer, "map": value}))
            paths.append(str(path))
        return paths

    entries = [["codc2", "dc", "before", results("dc", {"feat4": 50.0, "feat5": 52.0})],
               ["codc2", "rot", "before", results("rot", {"feat4": 48.0, "feat5": 47.0})],
               ["codc2", "dc", "after", results("dc_after", {"feat5": 55.0})],
               ["codc2", "rot", "after", results("rot_after", {"feat5": 49.0})],
               ["codc2", "dc", "concatenate", results("concat", {"feat4": 57.0, "feat5": 56.0})]]
    outputs = [str(tmp_path / f"codc_ablation{suffix}") for suffix in (".csv", ".md", ".tex")]
    frame = write_codc_ablation_from_results(entries, outputs, logging.getLogger("test"))
    assert cell(frame, "before CODC", "codc2: dc") == 52.0 and cell(frame, "before CODC", "codc2: rot") == 48.0
    assert cell(frame, "concatenate", "codc2: dc") == 57.0
    written = pd.read_csv(outputs[0])
    assert set(written["section"]) == {"measured", "published"}
