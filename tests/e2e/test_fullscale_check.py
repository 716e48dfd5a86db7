"""End to end: config/challenge.yaml itself, with only the size keys of config/fullscale_check.yaml, on a
miniature tree in the real layouts (256 px JPEGs from Fashion-MNIST), through every rule of the full-scale DAG on
the CPU: what `make fullscale_check` runs, in a scratch copy."""
from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import copy_workflow, run_snakemake  # noqa: E402
from dryrun import planned_jobs  # noqa: E402

from ssl_challenge.data.miniature import build_miniature  # noqa: E402

pytestmark = pytest.mark.slow
RUN_DIR = Path("results", "fullscale_check")
FULLSCALE = ["all_tracks", "--directory", str(RUN_DIR), "--configfile", "config/challenge.yaml",
             "config/fullscale_check.yaml"]
# Every rule of the workflow but prepare_data, which only the embedded data set needs, and the Places205 feature
# rules, which only the cached probe needs (full scale probes every row online, a concatenation through its members).
FULL_SCALE_RULES = {"pretrain", "snapshot_model", "pseudo_labels", "codc_labels", "codc_round",
                    "extract_voc07_features", "concat_voc07_features",
                    "svm_full", "lowshot_samples", "svm_lowshot", "merge_lowshot",
                    "linear_probe", "imagenet_linear", "voc07_detection", "submission_files", "leaderboard",
                    "dc_vs_odc", "ablation_tables", "all_tracks"}


@pytest.fixture(scope="module")
def fullscale_run(tmp_path_factory, request):
    """The miniature's finished run, deleted after this module's tests unless one failed: its ResNet-50 models and
    checkpoints take about 5 GB."""
    failures = request.session.testsfailed
    workdir = copy_workflow(tmp_path_factory.mktemp("fullscale") / "workflow")
    fashion_mnist = yaml.safe_load((workdir / "config" / "config.yaml").read_text())["data"]["embedded"][
        "fashion_mnist_dir"]
    build_miniature(fashion_mnist, workdir / RUN_DIR / "data")
    planned = planned_jobs(run_snakemake(workdir, "-n", *FULLSCALE).stdout)
    started = time.monotonic()
    result = run_snakemake(workdir, "--cores", "2", *FULLSCALE, timeout=3600)
    elapsed = time.monotonic() - started
    print(f"\nfull-scale miniature: {len(planned)} jobs in {elapsed:.0f} s")
    yield workdir / RUN_DIR, planned, result.stdout + result.stderr
    if request.session.testsfailed == failures:
        shutil.rmtree(workdir.parent, ignore_errors=True)


def test_every_rule_of_the_full_scale_dag_ran(fullscale_run):
    run_dir, planned, output = fullscale_run
    planned_rules = {job.rule for job in planned}
    assert planned_rules == FULL_SCALE_RULES
    ran = re.findall(r"^(?:local)?rule (\w+):", output, flags=re.MULTILINE)
    assert set(ran) == planned_rules
    assert len(ran) == len(planned), "every planned job ran once"
    assert re.search(rf"{len(planned)} of {len(planned)} steps \(100%\) done", output)


def test_every_model_member_and_concatenation_is_a_leaderboard_row(fullscale_run):
    run_dir, _, _ = fullscale_run
    table = pd.read_csv(run_dir / "results" / "tables" / "leaderboard.csv")
    measured = table[table["section"] == "measured"].set_index("model")
    assert set(measured.index) == {
        "random", "rot", "dc", "odc", "cls",
        "codc2@r1.dc", "codc2@r1.rot", "codc2_self@r1.dc", "codc2_self@r1.rot",
        "codc3@r1.dc", "codc3@r1.rot", "codc3@r1.cls",
        "codc2@r1.concat", "codc2_self@r1.concat", "codc3@r1.concat",
    }
    for track in ("voc07_svm", "voc07_lowshot", "places205_linear"):
        assert measured[track].between(0, 100).all(), track
    trunks = [name for name in measured.index if not name.endswith(".concat")]  # the ImageNet probe needs a trunk
    assert measured.loc[trunks, "imagenet_linear"].between(0, 100).all()
    # five layers on every SVM track, as at full scale
    assert sorted(p.stem for p in (run_dir / "results" / "eval" / "dc" / "voc07_svm").glob("*.json")) == [
        "feat1", "feat2", "feat3", "feat4", "feat5"]


def test_the_ablation_and_dc_vs_odc_tables_are_built(fullscale_run):
    run_dir, _, _ = fullscale_run
    ablation = (run_dir / "results" / "tables" / "codc_ablation.md").read_text()
    for column in ("codc2: dc", "codc2: rot", "codc3: dc", "codc3: rot", "codc3: cls"):
        assert column in ablation
    assert "control (label_source: self): after CODC" in ablation
    assert (run_dir / "results" / "tables" / "dc_vs_odc.csv").is_file()
