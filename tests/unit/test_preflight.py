"""tools/preflight.py on the CPU: it refuses to run without a GPU, and its arithmetic (the training jobs of the
full-scale configuration, gpu_check's rows, the GPU-hour extrapolation) against hand-computed values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import preflight  # noqa: E402  (tools/preflight.py)

GPU_CHECK_OUTPUT = """GPU: NVIDIA H100 80GB HBM3, torch 2.5.1
| ROT training step (fp32, 64 inputs) | 1,600 inputs/s | 2,000 inputs/s (pure fwd/bwd) | 0.800 (target >= 0.9) |
| DC training step (fp32, 64 inputs) | 900 inputs/s | 1,000 inputs/s (pure fwd/bwd) | 0.900 (target >= 0.9) |
| ODC training step (fp32, 64 inputs) | 800 inputs/s | 1,000 inputs/s (pure fwd/bwd) | 0.800 (target >= 0.9) |
| k-means 1,281,167 x 256 -> 10,000, 20 it. (GPU faiss) | 30.0 s (measured) | | |
| clustering per DC epoch | 0.60 min | | |
"""


def test_without_a_gpu_it_refuses_before_running_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(preflight, "visible_gpus", lambda: 0)
    monkeypatch.setattr(preflight, "PREFLIGHT_DIR", tmp_path / "preflight")

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran something without a GPU")

    monkeypatch.setattr(preflight, "run", must_not_run)
    assert preflight.main([]) == 1
    assert "no CUDA GPU is visible here" in capsys.readouterr().err
    assert not (tmp_path / "preflight").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal is for machines without")
def test_the_script_and_make_target_exit_non_zero_on_this_cpu_machine():
    script = subprocess.run([sys.executable, "tools/preflight.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert script.returncode == 1 and "Nothing was run" in script.stderr
    target = subprocess.run(["make", "-s", "preflight"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert target.returncode != 0 and "no NVIDIA GPU here" in target.stderr


def test_gpu_hours_hand_computed():
    jobs = [preflight.TrainingJob("rot", "rot", epochs=70, inputs_per_epoch=4 * 1000),
            preflight.TrainingJob("dc", "dc", epochs=200, inputs_per_epoch=1000, clusters_every_epoch=True)]
    throughput = {"rot": preflight.StepThroughput("fp32", 64, 400.0, 500.0),
                  "dc": preflight.StepThroughput("fp32", 64, 100.0, 125.0)}
    hours = preflight.extrapolate_gpu_hours(jobs, throughput, clustering_seconds_per_epoch=36.0, gpus_per_job=8)
    # rot: 70 x 4000 / 400 = 700 GPU-s; dc: 200 x 1000 / 100 = 2000 GPU-s + 200 epochs x 36 s x 8 GPUs idle = 59600
    assert hours == pytest.approx({"rot": 700 / 3600, "dc": 59600 / 3600})
    unmeasured = preflight.extrapolate_gpu_hours(jobs, throughput, clustering_seconds_per_epoch=None, gpus_per_job=8)
    assert unmeasured["dc"] == pytest.approx(2000 / 3600)


def test_training_jobs_of_the_full_scale_configuration():
    config = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
    jobs = {job.name: job for job in preflight.training_jobs(config, images_per_epoch=1000)}
    assert "random" not in jobs  # 0 epochs: nothing to train
    assert jobs["rot"] == preflight.TrainingJob("rot", "rot", 70, 4000)
    assert jobs["dc"] == preflight.TrainingJob("dc", "dc", 200, 1000, clusters_every_epoch=True)
    assert jobs["odc"] == preflight.TrainingJob("odc", "odc", 440, 1000)
    assert jobs["cls"] == preflight.TrainingJob("cls", "dc", 90, 1000)  # a classification step, timed as DC's
    # CODC members train like their base method, without clustering every epoch
    assert jobs["codc2.rot"] == preflight.TrainingJob("codc2.rot", "rot", 20, 4000)
    assert jobs["codc3.cls"] == preflight.TrainingJob("codc3.cls", "dc", 20, 1000)
    assert not jobs["codc2.dc"].clusters_every_epoch
    members = sum(len(spec["members"]) for spec in config["codc"].values())
    assert len(jobs) == 4 + members


def test_gpu_check_rows_are_read():
    throughput, clustering = preflight.parse_gpu_check(GPU_CHECK_OUTPUT)
    assert throughput["rot"] == preflight.StepThroughput("fp32", 64, 1600.0, 2000.0)
    assert throughput["dc"].ratio == pytest.approx(0.9)
    assert set(throughput) == {"rot", "dc", "odc"} and clustering == pytest.approx(36.0)


def test_with_gpus_it_runs_the_check_and_the_miniature_on_all_of_them(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(preflight, "visible_gpus", lambda: 2)
    monkeypatch.setattr(preflight, "PREFLIGHT_DIR", tmp_path / "preflight")
    commands = []

    def fake_run(command, log):
        commands.append(command)
        return 0, GPU_CHECK_OUTPUT if "gpu_check.py" in command[1] else ""

    monkeypatch.setattr(preflight, "run", fake_run)
    assert preflight.main([]) == 0
    assert "--precision" in commands[0] and commands[0][commands[0].index("--precision") + 1] == "fp32"
    snakemake = commands[-1]
    assert "--resources" in snakemake and "gpu=2" in snakemake
    assert {"pretrain:gpu=2", "codc_round:gpu=2", "pseudo_labels:gpu=1"} <= set(snakemake)
    printed = capsys.readouterr().out
    config = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
    throughput, clustering = preflight.parse_gpu_check(GPU_CHECK_OUTPUT)
    total = sum(preflight.extrapolate_gpu_hours(preflight.training_jobs(config), throughput, clustering, 8).values())
    assert f"{total:10,.0f}" in printed and "ratio 0.80" in printed
