"""`make evaluate`, as documented, on a checkpoint this test saves (a small backbone in the MMSelfSup layout, on the
smoke configuration's embedded data, the VOC07 SVM track only): only that model runs, and its row is printed
beside the published rows."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from conftest import REPO, copy_workflow  # noqa: E402

pytestmark = pytest.mark.slow


def save_mmselfsup_checkpoint(path: Path) -> dict:
    """A training checkpoint as MMSelfSup writes it: the backbone under ``backbone.``, beside a neck and a head."""
    from ssl_challenge.models.backbones import build_backbone

    torch.manual_seed(5)
    state = build_backbone({"name": "small_resnet"}).state_dict()
    content = {"meta": {"epoch": 200}, "state_dict": {
        **{f"backbone.{key}": value for key, value in state.items()},
        "neck.fc.weight": torch.zeros(4, 64), "head.fc_cls.weight": torch.zeros(10, 4)}}
    torch.save(content, path)
    return state


def test_make_evaluate_runs_only_the_checkpoint_and_prints_its_row(tmp_path):
    checkout = copy_workflow(tmp_path / "checkout")
    for name in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO / name, checkout / name)
    shutil.copytree(REPO / "tools", checkout / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    weights = tmp_path / "My-Model.pth"
    save_mmselfsup_checkpoint(weights)
    command = ["make", "-s", "evaluate", f"VENV={REPO / '.venv'}", f"WEIGHTS={weights}", "LAYOUT=mmselfsup",
               "TRACKS=voc07_svm", "BACKBONE=small_resnet", "BASE=config/smoke.yaml"]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=1500,
                            env=dict(os.environ, SLURM_CONF="/dev/null"))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])

    row = re.search(r"^\| my_model \| ([0-9.]+) \| (feat\d) \|", result.stdout, flags=re.MULTILINE)
    assert row and 0 < float(row.group(1)) < 100, result.stdout[-2000:]
    assert "| ODC | 78.42 |" in result.stdout and "| DeepCluster | 74.26 |" in result.stdout  # published rows
    workdir = checkout / "results" / "evaluate" / "my_model"
    assert (workdir / "leaderboard.md").read_text() in result.stdout
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    assert list(config["models"]) == ["my_model"] and config["models"]["my_model"]["method"] == "external"
    assert config["models"]["my_model"]["method_options"] == {"weights": str(weights), "layout": "mmselfsup"}
    # Only that model, only the SVM track: no other model trained, no low-shot or Places205 job.
    assert sorted(path.name for path in (workdir / "results" / "models").iterdir()) == ["my_model"]
    evaluated = {path.relative_to(workdir / "results" / "eval").as_posix()
                 for path in (workdir / "results" / "eval").rglob("*.json")}
    assert evaluated == {"my_model/voc07_svm/feat5.json"}
    assert not (checkout / "results" / "tables").exists()  # the main run's tables are left alone
