"""The seeds study's aggregation and verdicts on hand-made tables."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from ssl_challenge.plan.seed_configs import seeded_config
from ssl_challenge.reporting.seeds_study import (FAILS, HOLDS, WITHIN_NOISE, ablation_claims, aggregate, claims_table,
                                       speed_claim, spread, verdict, write_seeds_study)


def test_spread_by_hand():
    summary = spread([1.0, 2.0, 3.0, float("nan")])
    assert (summary.mean, summary.std, summary.n) == (2.0, 1.0, 3)
    assert summary.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) = 4.3027
    assert summary.text() == "2.00 +- 1.00 (n=3)"
    assert spread([5.0]).std is None and spread([5.0]).half_width is None and spread([]) is None


def test_verdicts():
    assert verdict([1.0, 1.2, 0.9]) == HOLDS  # mean 1.03, half width 0.38
    assert verdict([-1.0, -1.2, -0.9]) == FAILS
    assert verdict([1.0, -0.5, 0.8]) == WITHIN_NOISE
    assert verdict([3.0]) == WITHIN_NOISE  # one seed: no spread, no verdict
    assert verdict([0.5, 3.0, 0.4]) == WITHIN_NOISE  # positive every time, but the spread is too large for 3 seeds


def test_aggregate_gives_mean_std_and_n_per_cell():
    seeds = [pd.DataFrame({"model": ["a", "b"], "voc07_svm": [10.0, 20.0], "voc07_svm_layer": ["feat5", "feat4"]}),
             pd.DataFrame({"model": ["a", "b"], "voc07_svm": [12.0, float("nan")], "voc07_svm_layer": ["feat5", ""]})]
    table = aggregate(seeds, ["model"])
    assert list(table.columns) == ["model", "voc07_svm"]
    assert table.set_index("model")["voc07_svm"].to_dict() == {"a": "11.00 +- 1.41 (n=2)", "b": "20.00 (n=1)"}


def ablation(before_dc, before_rot, after_dc, after_rot, concat, control_dc, control_rot):
    return pd.DataFrame({
        "stage": ["before CODC", "after CODC", "concatenate", "control (label_source: self): after CODC"],
        "e: dc": [before_dc, after_dc, concat, control_dc], "e: rot": [before_rot, after_rot, None, control_rot]})


def test_ablation_claims_by_hand():
    tables = [ablation(50, 40, 52, 43, 55, 51, 42), ablation(51, 41, 53, 44, 54, 50, 41),
              ablation(50, 40, 52.5, 43.5, 56, 52, 44)]
    claims = {claim.comparison: claim for claim in ablation_claims(tables)}
    assert claims["e: dc after - before CODC"].differences == [2, 2, 2.5]
    assert claims["e: dc after - before CODC"].verdict == HOLDS
    assert claims["e: rot after - before CODC"].differences == [3, 3, 3.5]
    concatenation = claims["e: concatenation - best member after CODC"]
    assert concatenation.differences == [3, 1, 3.5] and concatenation.verdict == WITHIN_NOISE
    peers = claims["e: dc after CODC, peers' - own labels"]
    assert peers.differences == [1, 3, 0.5] and peers.verdict == WITHIN_NOISE
    table = claims_table(list(claims.values()))
    row = table[table["comparison"] == "e: dc after - before CODC"].iloc[0]
    assert (row["difference"], row["spread (std)"], row["n"], row["verdict"]) == ("+2.17", "0.29", 3, HOLDS)


def test_speed_claim_counts_seeds_where_odc_never_gets_there():
    def table(dc, odc):
        return pd.DataFrame({"method": ["dc", "odc"], "seconds_to_dc_final": [dc, odc]})

    claim = speed_claim([table(100.0, 60.0), table(110.0, 70.0), table(105.0, 62.0)])
    assert claim.differences == [40.0, 40.0, 43.0] and claim.verdict == HOLDS
    claim = speed_claim([table(100.0, None), table(110.0, None), table(105.0, 62.0)])
    row = claims_table([claim]).iloc[0]
    assert row["verdict"].startswith(FAILS) and "2 of 3 seeds" in row["verdict"]


def test_seeded_config_changes_only_the_training_seeds():
    config = {"models": {"dc": {"seed": 0, "epochs": 2}}, "codc": {"c": {"seed": 0}},
              "data": {"embedded": {"seed": 0}}, "seeds_study": {"seeds": [0, 1]}}
    seeded = seeded_config(config, 7)
    assert seeded["models"]["dc"] == {"seed": 7, "epochs": 2} and seeded["codc"]["c"]["seed"] == 7
    assert seeded["data"] == config["data"] and "seeds_study" not in seeded and config["models"]["dc"]["seed"] == 0
    real = {"data": {"imagenet_root": "data/imagenet", "voc07_root": "/abs/VOCdevkit", "places205_root": "",
                     "embedded": {"fashion_mnist_dir": "fmnist"}}}
    data = seeded_config(real, 1, "/cluster/seed1")["data"]  # each seed runs in its own directory
    assert data == {"imagenet_root": "/cluster/seed1/data/imagenet", "voc07_root": "/abs/VOCdevkit",
                    "places205_root": "", "embedded": {"fashion_mnist_dir": "/cluster/seed1/fmnist"}}


def test_the_seed_configs_code_digest_leaves_the_study_statistics_out():
    """A seed's run is stale when its config's code changes, not when the study's aggregation does: the
    ``seed_config`` jobs' code digest (the script and what it imports) leaves ``seeds_study.py`` out."""
    from ssl_challenge.core import provenance

    root = Path(__file__).resolve().parents[2]
    closure = {path.name for path in provenance.import_closure([root / "workflow" / "scripts" / "seed_config.py"])}
    assert "seed_configs.py" in closure and "seeds_study.py" not in closure


def test_write_seeds_study(tmp_path):
    paths = {"leaderboards": [], "ablations": [], "dc_vs_odcs": []}
    for seed, shift in enumerate([0.0, 1.0]):
        path = tmp_path / f"leaderboard{seed}.csv"
        pd.DataFrame({"section": ["measured", "published"], "model": ["dc", "ODC"],
                      "voc07_svm": [40 + shift, 78.4]}).to_csv(path, index=False)
        paths["leaderboards"].append(path)
        path = tmp_path / f"ablation{seed}.csv"
        published = pd.DataFrame({"stage": ["after CODC"], "2 models: DC": [75.79], "section": ["published"]})
        pd.concat([ablation(50, 40, 52 + shift, 43, 55, 51, 42).assign(section="measured"), published]).to_csv(
            path, index=False)
        paths["ablations"].append(path)
    outputs = {key: str(tmp_path / name) for key, name in [
        ("leaderboard_csv", "l.csv"), ("leaderboard_md", "l.md"), ("ablation_csv", "a.csv"),
        ("ablation_md", "a.md"), ("claims_csv", "claims.csv"), ("claims_md", "claims.md")]}
    write_seeds_study([0, 1], paths["leaderboards"], paths["ablations"], [], outputs, logging.getLogger("t"))
    assert pd.read_csv(outputs["leaderboard_csv"]).to_dict("records") == [
        {"model": "dc", "voc07_svm": "40.50 +- 0.71 (n=2)"}]  # the published rows are not averaged
    # only the measured section's columns: the published figures' own columns are neither averaged nor shown empty
    assert list(pd.read_csv(outputs["ablation_csv"]).columns) == ["stage", "e: dc", "e: rot"]
    assert "2 models" not in (tmp_path / "a.md").read_text()
    claims = (tmp_path / "claims.md").read_text()
    assert "| CODC improves every member | e: dc after - before CODC | +2.50 | 0.71 |" in claims
    assert "Seeds [0, 1]" in claims
    for name in ("l.md", "a.md", "claims.md"):  # each says its figures were chosen on test data, in each run
        note = (tmp_path / name).read_text().strip().splitlines()[-1]
        assert note.startswith("Selected on test data, as in the reference protocol. VOC07 SVM"), name
        assert "Each seed's run makes these choices on its own results." in note, name
    assert "low-shot" not in (tmp_path / "l.md").read_text()  # the per-seed leaderboards had no low-shot column
    write_seeds_study([0, 1], paths["leaderboards"], [], [], outputs, logging.getLogger("t"))
    assert "No claim applies" in (tmp_path / "claims.md").read_text()
    assert "none: the config has no ablation" in (tmp_path / "a.md").read_text()
