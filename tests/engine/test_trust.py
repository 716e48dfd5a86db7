"""What the loop writes can be trusted and what it reads is checked: every file it writes loads with
``weights_only=True``; a planted or truncated checkpoint is refused naming its path; a diverging run stops at once,
naming the model, and leaves no model file and no checkpoint holding the diverged state."""
import json
import math

import pytest
import torch

from ssl_challenge.core.config import ConfigError
from ssl_challenge.engine.run_control import NonFiniteValues, TrainingDiverged
from ssl_challenge.engine.train import feature_extractor
from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs engine.train.pretrain
from ssl_challenge.core.finite import non_finite_tensors
from ssl_challenge.core.io import CorruptFileError, ModelFileError
from ssl_challenge.methods.rotation import RotationPrediction
from ssl_challenge.models.backbones import read_model_file

from conftest import Payload

from .worker import clustered_images, tiny_config, tiny_images

CPU = torch.device("cpu")


def quiet(_message):
    pass


def safe_load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("method", ["rot", "dc", "odc"])
def test_every_file_the_loop_writes_loads_with_weights_only(tmp_path, method):
    images = clustered_images() if method != "rot" else tiny_images()
    pretrain(tiny_config(method, epochs=2, snapshot_epochs=[1]), images, tmp_path, CPU, log=quiet)
    checkpoint = safe_load(tmp_path / "checkpoint.pth")  # optimizer state, run position, memories, labels
    assert checkpoint["run"]["epoch"] == 2 and checkpoint["optimizer"]["state"]
    for path in (tmp_path / "model.pth", tmp_path / "snapshots" / "epoch_0001.pth"):
        saved = read_model_file(path)
        assert saved["method"] == method and saved["backbone"]


def test_snapshot_epochs_beyond_the_training_are_refused_before_it(tmp_path):
    with pytest.raises(ConfigError, match=r"snapshot_epochs: \[4\] outside 1..3 \(epochs\)"):
        pretrain(tiny_config(epochs=3, snapshot_epochs=[2, 4]), tiny_images(), tmp_path, CPU, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_a_planted_checkpoint_is_refused_before_it_runs(tmp_path):
    config = tiny_config()
    pretrain(config, tiny_images(), tmp_path, CPU, log=quiet, stop_after_iterations=2)
    path, marker = tmp_path / "checkpoint.pth", tmp_path / "marker"
    state = safe_load(path)
    state["run"]["totals"] = Payload(marker)
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=f"{path}: refused: .* could run code .*restart this run from scratch"):
        pretrain(config, tiny_images(), tmp_path, CPU, log=quiet)
    assert not marker.exists() and not (tmp_path / "model.pth").exists()


def test_a_truncated_checkpoint_names_its_path_and_how_to_restart(tmp_path):
    config = tiny_config(epochs=2)
    reference = read_model_file(pretrain(config, tiny_images(), tmp_path / "reference", CPU, log=quiet))
    run_dir = tmp_path / "cut"
    pretrain(config, tiny_images(), run_dir, CPU, log=quiet, stop_after_iterations=3)
    path = run_dir / "checkpoint.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short, a disk that filled up
    with pytest.raises(CorruptFileError, match=f"{path}: unreadable, truncated or corrupt .*Delete it to restart "
                                               r"this run from scratch \(epoch 0\)"):
        pretrain(config, tiny_images(), run_dir, CPU, log=quiet)
    path.unlink()  # what the message says to do: the run starts again and ends where an uninterrupted one does
    restarted = read_model_file(pretrain(config, tiny_images(), run_dir, CPU, log=quiet))
    for key, value in reference["backbone"].items():
        assert torch.equal(restarted["backbone"][key], value), key


def test_a_huge_learning_rate_stops_training_at_once(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"models.rot: training diverged at epoch 1, iteration \d+: .* is NaN "
                                               r"or infinite; last finite loss: [0-9.e+-]+\. No model file"):
        pretrain(tiny_config(optimizer={"lr": 1e6}), tiny_images(), tmp_path, CPU, log=quiet, name="models.rot")
    assert not (tmp_path / "model.pth").exists()
    if (tmp_path / "checkpoint.pth").exists():  # written before the divergence: only finite values
        assert non_finite_tensors(safe_load(tmp_path / "checkpoint.pth")["method"]) == []


def test_a_nan_loss_names_the_iteration_and_the_last_finite_loss(tmp_path, monkeypatch):
    original, calls = RotationPrediction.training_step, []

    def nan_at_third_iteration(self, images, indices):
        loss, logs = original(self, images, indices)
        calls.append(1)
        return (loss * float("nan"), logs) if len(calls) == 3 else (loss, logs)

    monkeypatch.setattr(RotationPrediction, "training_step", nan_at_third_iteration)
    config = tiny_config(checkpoint_every=2)
    with pytest.raises(TrainingDiverged) as error:
        pretrain(config, tiny_images(), tmp_path, CPU, log=quiet, log_every=1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    second_loss = [r["loss"] for r in records if r["iteration"] == 2][0]
    message = str(error.value)
    assert message.startswith(f"{tmp_path}: training diverged at epoch 1, iteration 3: the loss (nan) is NaN")
    assert f"last finite loss: {format(second_loss, '.6g')}." in message
    assert not (tmp_path / "model.pth").exists()
    # The checkpoint of iteration 2 holds the state before the NaN: a rerun resumes from it and finishes.
    assert safe_load(tmp_path / "checkpoint.pth")["run"]["iteration"] == 2
    monkeypatch.setattr(RotationPrediction, "training_step", original)
    final = pretrain(config, tiny_images(), tmp_path, CPU, log=quiet)
    assert non_finite_tensors(read_model_file(final)["backbone"]) == []


def test_non_finite_features_for_clustering_stop_the_run():
    method = torch.nn.Linear(1, 1)
    extract = feature_extractor(tiny_images(8), 8, 4, CPU, method)
    assert extract(lambda batch: batch.flatten(1)[:, :2]).shape == (8, 2)
    with pytest.raises(NonFiniteValues, match="features extracted for the epoch's clustering"):
        extract(lambda batch: batch.flatten(1)[:, :2] * math.inf)
