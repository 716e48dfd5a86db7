"""A pretraining run's identity (its run folder) and when a run folder is reused: a killed run resumes, a finished
one is trained again, and whatever changes the result (image list, data files, labels) starts a new run."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from layouts_fixture import make_tiny_imagenet, write_tiny_jpeg
from ssl_challenge.core import provenance
from ssl_challenge.core.config import from_dict
from ssl_challenge.data.imagenet import pretraining_images
from ssl_challenge.engine.train import PretrainConfig
from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs engine.train.pretrain
from ssl_challenge.stages.pretraining import config_digest, pretrain_model, run_identity

PRETRAIN_DATA = {"image_size": 16, "resize_shorter": 16, "preload": True, "crop_padding": 2}
MODEL = {"method": "rot", "backbone": {"name": "small_resnet"}, "epochs": 2, "batch_size": 8,
         "optimizer": {"lr": 0.05}, "checkpoint_every": 1}


class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log():
    logger = logging.getLogger("test_pretraining")
    logger.handlers[:] = [Messages()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


@pytest.fixture
def data(tmp_path):
    torch.set_num_threads(1)
    make_tiny_imagenet(tmp_path / "imagenet", n_classes=2, per_class=8)  # 16 images: 2 iterations per epoch
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"seed": 0}\n')
    return tmp_path / "imagenet", manifest


def train(tmp_path, data, log, name="model"):
    root, manifest = data
    output = tmp_path / name / "model.pth"
    pretrain_model(MODEL, PRETRAIN_DATA, str(root), str(output), str(tmp_path / name / "metrics.jsonl"), threads=1,
                   log=log, data_files=[str(manifest)])
    return output


def backbone(path):
    return torch.load(path, map_location="cpu", weights_only=False)["backbone"]


def test_a_finished_run_is_trained_again(tmp_path, data, log):
    output = train(tmp_path, data, log)
    first = backbone(output)
    log.handlers[0].lines.clear()
    train(tmp_path, data, log)  # what `--forcerun pretrain` does: the job runs again
    lines = log.handlers[0].lines
    assert any("holds a finished run: training again from scratch" in line for line in lines)
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert not any("nothing to do" in line or "resumed from" in line for line in lines)
    assert all(torch.equal(first[key], value) for key, value in backbone(output).items())  # deterministic
    runs = list((tmp_path / "model" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "identity.json").exists()


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, data, log):
    root, manifest = data
    reference = backbone(train(tmp_path, data, log, name="reference"))
    output = tmp_path / "killed" / "model.pth"
    run_dir = output.parent / "runs" / config_digest(run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)]))
    images = pretraining_images(str(root), PRETRAIN_DATA, 1, lambda _: None)
    config = from_dict(PretrainConfig, MODEL)
    assert pretrain(config, images, run_dir, torch.device("cpu"), log=lambda _: None, stop_after_iterations=3) is None
    log.handlers[0].lines.clear()
    train(tmp_path, data, log, name="killed")
    lines = log.handlers[0].lines
    assert any(line.startswith("resumed from") and "iteration 3" in line for line in lines)
    assert [line.split(":")[0] for line in lines if line.startswith("epoch ")] == ["epoch 2/2"]
    resumed = backbone(output)
    assert all(torch.equal(reference[key], value) for key, value in resumed.items())


def test_the_run_folder_follows_the_data_content_not_file_times(data):
    root, manifest = data

    def identity():
        return config_digest(run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)]))

    first = identity()
    image = sorted((root / "train").rglob("*.JPEG"))[0]
    os.utime(image, (0, 0))
    assert identity() == first  # a touched file is the same data
    write_tiny_jpeg(image, 30, 30, seed=999)  # replaced by another image (another size)
    replaced = identity()
    assert replaced != first
    write_tiny_jpeg(root / "train" / "n01000001" / "extra.JPEG", 20, 14, seed=5)
    assert identity() not in (first, replaced)
    added = identity()
    manifest.write_text('{"seed": 1}\n')  # the embedded data set rebuilt with another seed
    assert identity() != added
    assert config_digest(run_identity({**MODEL, "seed": 3}, PRETRAIN_DATA, str(root), [str(manifest)])) != identity()


def test_the_identity_names_the_code_of_the_method_it_trains(data):
    root, manifest = data
    identity = run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)])
    pretraining_file = provenance.PACKAGE_DIR / "stages" / "pretraining.py"
    assert identity["code"] == provenance.code_digest([pretraining_file] + provenance.method_files(["rot"]))
    other = run_identity({**MODEL, "method": "random", "epochs": 0}, PRETRAIN_DATA, str(root), [str(manifest)])
    assert other["code"] != identity["code"]
    assert identity["data_files"] == {str(manifest): identity["data_files"][str(manifest)]}


def test_two_processes_train_through_torchrun_in_the_same_run_folder(tmp_path, data, log):
    root, manifest = data
    output = tmp_path / "two" / "model.pth"
    pretrain_model(MODEL, PRETRAIN_DATA, str(root), str(output), str(tmp_path / "two" / "metrics.jsonl"), threads=2,
                   log=log, processes=2, data_files=[str(manifest)])
    run_dir = output.parent / "runs" / config_digest(run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)]))
    assert (run_dir / "request.json").exists() and (run_dir / "model.pth").exists()
    saved = torch.load(output, map_location="cpu", weights_only=False)
    assert saved["processes"] == 2 and saved["epochs"] == 2


def test_the_identity_follows_the_numerics_mode(data, monkeypatch):
    root, manifest = data
    monkeypatch.setenv("SSL_CHALLENGE_DETERMINISTIC", "1")
    deterministic = config_digest(run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)]))
    monkeypatch.setenv("SSL_CHALLENGE_DETERMINISTIC", "0")
    assert config_digest(run_identity(MODEL, PRETRAIN_DATA, str(root), [str(manifest)])) != deterministic


def test_torchrun_output_goes_to_the_rule_log_and_a_failure_raises(tmp_path):
    import logging
    import subprocess
    import sys

    from ssl_challenge.stages.pretraining import run_logged

    log_file = tmp_path / "rule.log"
    log = logging.getLogger("test_run_logged")
    log.handlers[:] = [logging.FileHandler(log_file)]
    log.setLevel(logging.INFO)
    log.propagate = False
    worker = "import sys; print('epoch 1 on stdout'); print('warning on stderr', file=sys.stderr)"
    run_logged([sys.executable, "-c", worker], log)
    assert log_file.read_text().splitlines() == ["epoch 1 on stdout", "warning on stderr"]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_logged([sys.executable, "-c", "raise SystemExit('worker 1 crashed')"], log)
    assert failed.value.returncode == 1 and "worker 1 crashed" in failed.value.output
    assert "worker 1 crashed" in log_file.read_text()
