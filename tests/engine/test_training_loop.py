"""The training loop: schedule, rotation, exact resume (in-process, SIGTERM, SIGKILL), metrics, 1 vs 2 processes."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_challenge.core.config import from_dict
from ssl_challenge.data.file_images import FileImages
from ssl_challenge.data.images import PreloadedImages
from ssl_challenge.engine import distributed
from ssl_challenge.engine.checkpoint import RunPosition
from ssl_challenge.engine.schedule import learning_rate_factor
from ssl_challenge.engine.run_control import Preempted, derived_seed
from ssl_challenge.engine.settings import PretrainConfig
from ssl_challenge.engine.train import epoch_requests
from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs engine.train.pretrain
from ssl_challenge.methods import build_method
from ssl_challenge.methods.rotation import rotate_four_ways
from ssl_challenge.models.backbones import build_backbone

from .worker import tiny_config, tiny_images

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).parents[2]
CPU = torch.device("cpu")


def load_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["backbone"]


def assert_same_weights(first, second):
    first, second = load_weights(first), load_weights(second)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def quiet(_message):
    pass


def test_schedule_warmup_then_steps():
    # 4 iterations per epoch, warm-up 1 epoch from 0.1 (mmcv): 1 - (1 - i/4) * 0.9 = 0.1, 0.325, 0.55, 0.775,
    # then 1; milestones at epochs 2 and 3.
    factors = [learning_rate_factor(i, 4, 1, [2, 3], 0.1) for i in range(16)]
    assert factors[:4] == pytest.approx([0.1, 0.325, 0.55, 0.775])
    assert factors[4:8] == pytest.approx([1.0] * 4)
    assert factors[8:12] == pytest.approx([0.1] * 4)
    assert factors[12:] == pytest.approx([0.01] * 4)
    assert learning_rate_factor(0, 4, 0, [], 0.1) == 1.0


def test_warmup_ratio_and_warmup_over_a_milestone():
    # warm-up of 2 epochs x 2 iterations with ratio 0.5: 0.5, 0.625, 0.75, 0.875; a milestone at epoch 1 falls
    # inside it and scales the ramp (0.1 x 0.75 at iteration 2); ratio 1 is no warm-up at all.
    factors = [learning_rate_factor(i, 2, 2, [1], 0.1, warmup_ratio=0.5) for i in range(5)]
    assert factors == pytest.approx([0.5, 0.625, 0.075, 0.0875, 0.1])
    assert learning_rate_factor(0, 2, 2, [], 0.1, warmup_ratio=1.0) == 1.0
    with pytest.raises(ValueError, match="warmup_ratio"):
        learning_rate_factor(0, 2, 2, [], 0.1, warmup_ratio=1.5)


def test_rotations_are_quarter_turns_with_labels():
    image = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    rotated, labels = rotate_four_ways(image)
    assert labels.tolist() == [0, 1, 2, 3]
    assert rotated[0, 0].tolist() == [[0, 1], [2, 3]]
    assert rotated[1, 0].tolist() == [[1, 3], [0, 2]]  # 90 degrees counter-clockwise
    assert rotated[2, 0].tolist() == [[3, 2], [1, 0]]
    assert rotated[3, 0].tolist() == [[2, 0], [3, 1]]
    with pytest.raises(ValueError, match="square"):
        rotate_four_ways(torch.zeros(1, 1, 2, 3))


def test_rotation_learns_on_tiny_data(tmp_path):
    config = tiny_config(epochs=6, optimizer={"lr": 0.1}, schedule={})
    final = pretrain(config, tiny_images(), tmp_path, CPU, log=quiet)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1]["loss"] < epochs[0]["loss"] - 0.05
    saved = torch.load(final, weights_only=True)
    assert saved["method"] == "rot" and saved["epochs"] == 6 and saved["iterations"] == 6 * 6
    assert pretrain(config, tiny_images(), tmp_path, CPU, log=quiet) == final  # done: nothing to do


def test_random_baseline_saves_the_initialisation(tmp_path):
    config = tiny_config("random", epochs=0)
    final = pretrain(config, tiny_images(), tmp_path, CPU, log=quiet)
    torch.manual_seed(12345)  # the loop seeds the initialisation itself: the same weights whatever the global RNG
    again = pretrain(config, tiny_images(), tmp_path / "again", CPU, log=quiet)
    assert_same_weights(final, again)
    with pytest.raises(ValueError, match="epochs to 0"):
        pretrain(tiny_config("random", epochs=1), tiny_images(), tmp_path / "bad", CPU, log=quiet)


def test_unknown_method_and_options_are_refused():
    backbone = build_backbone({"name": "small_resnet"})
    with pytest.raises(ValueError, match="unknown method 'rotnet'"):
        build_method("rotnet", backbone, {}, 10)
    with pytest.raises(ValueError, match=r"method_options: unknown key\(s\) \[.head_std.\]"):
        build_method("rot", backbone, {"head_std": 0.1}, 10)


@pytest.mark.parametrize("stop_at", [3, 6, 7])  # mid-epoch, an epoch boundary, right after one
def test_resume_in_process_is_exact(tmp_path, stop_at):
    config = tiny_config()
    reference = pretrain(config, tiny_images(), tmp_path / "reference", CPU, log=quiet)
    assert pretrain(config, tiny_images(), tmp_path / "resumed", CPU, log=quiet, stop_after_iterations=stop_at) is None
    assert (tmp_path / "resumed" / "checkpoint.pth").exists()
    resumed = pretrain(config, tiny_images(), tmp_path / "resumed", CPU, log=quiet)
    assert_same_weights(reference, resumed)

    def strip_times(path):
        return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}
                for line in path.read_text().splitlines()]

    assert strip_times(tmp_path / "resumed" / "metrics.jsonl") == strip_times(tmp_path / "reference" / "metrics.jsonl")


def test_checkpoint_of_another_config_is_refused(tmp_path):
    pretrain(tiny_config(), tiny_images(), tmp_path, CPU, log=quiet, stop_after_iterations=2)
    with pytest.raises(ValueError, match="checkpoint of another configuration"):
        pretrain(tiny_config(optimizer={"lr": 0.5}), tiny_images(), tmp_path, CPU, log=quiet)


def start_worker(run_dir, epochs=40, pause_before_step=None, pause_dir=None):
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    if pause_before_step is not None:
        env.update(PAUSE_BEFORE_STEP=str(pause_before_step), PAUSE_DIR=str(pause_dir))
    return subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "rot", str(epochs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_pause(pause_dir, process, timeout=120):
    """Until the worker says it paused (worker.py: PAUSE_BEFORE_STEP); fails if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (pause_dir / "paused").exists():
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"the worker did not pause within {timeout} s")


def resumed_iteration(output):
    found = re.search(r"resumed from .*iteration (\d+)", output)
    assert found, output
    return int(found.group(1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL])
def test_killed_worker_resumes_to_identical_weights(tmp_path, signum):
    epochs = 4  # 6 iterations per epoch, 24 in all
    uninterrupted = start_worker(tmp_path / "reference", epochs)  # same process settings (threads) as the killed one
    assert uninterrupted.wait(timeout=120) == 0
    reference = tmp_path / "reference" / "model.pth"
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    # The worker waits before its 9th step (mid-epoch 2, 8 iterations done and checkpointed), so the signal always
    # reaches a run in progress, whatever the machine's speed.
    process = start_worker(tmp_path / "killed", epochs, pause_before_step=9, pause_dir=pause_dir)
    wait_for_pause(pause_dir, process)
    process.send_signal(signum)
    (pause_dir / "go").write_text("")  # the handlers' flag is set by now; the loop stops after this step
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0
    if signum != signal.SIGKILL:
        assert "Preempted" in output and f"{signal.Signals(signum).name} received" in output
        assert "checkpoint written at iteration 9" in output, output
    assert not (tmp_path / "killed" / "model.pth").exists()
    assert (tmp_path / "killed" / "checkpoint.pth").exists()
    finished = start_worker(tmp_path / "killed", epochs)
    output = finished.communicate(timeout=120)[0]
    assert finished.returncode == 0, output
    # SIGKILL: the checkpoint after iteration 8; SIGTERM/SIGUSR1: the one written on the signal, after iteration 9.
    assert resumed_iteration(output) == (8 if signum == signal.SIGKILL else 9)
    assert_same_weights(reference, tmp_path / "killed" / "model.pth")


def test_preempted_is_raised_in_process(tmp_path):
    config = tiny_config(epochs=2)

    def send_term(message):
        if message.startswith("epoch 1/"):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match="SIGTERM received"):
        pretrain(config, tiny_images(), tmp_path, CPU, log=send_term)
    assert (tmp_path / "checkpoint.pth").exists() and not (tmp_path / "model.pth").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


class Source:
    """An image source known to the engine only through the PretrainingImages interface."""

    def __init__(self, per_sample_seeds: bool):
        self.per_sample_seeds = per_sample_seeds


def test_the_source_says_how_a_process_makes_its_slice_of_a_global_batch(monkeypatch):
    monkeypatch.setattr(distributed, "rank", lambda: 1)  # the second of 2 processes, 2 samples each
    config = from_dict(PretrainConfig, tiny_config(batch_size=4, seed=7), where="models.rot")
    run = RunPosition(epoch=1, position=0, order=torch.arange(10, 18))
    whole = epoch_requests(Source(per_sample_seeds=False), config, run, iterations=2, local_size=2)
    assert [request.indices.tolist() for request in whole] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert [(request.keep, request.slot_seed) for request in whole] == [((2, 4), None)] * 2
    assert [request.batch_seed for request in whole] == [derived_seed(7, 1, 0, 2), derived_seed(7, 1, 1, 2)]
    sliced = epoch_requests(Source(per_sample_seeds=True), config, run, iterations=2, local_size=2)
    assert [request.indices.tolist() for request in sliced] == [[12, 13], [16, 17]]
    assert [(request.keep, request.slot_seed) for request in sliced] == [(None, (7, 1, 2)), (None, (7, 1, 6))]
    run.position = 1  # resumed after the first batch: the rest of the epoch only
    assert [request.indices.tolist() for request in epoch_requests(Source(True), config, run, 2, 2)] == [[16, 17]]
    assert PreloadedImages.per_sample_seeds is False and FileImages.per_sample_seeds is True
