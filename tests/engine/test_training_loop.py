"""The training loop: schedule, rotation, exact resume (in-process, SIGTERM, SIGKILL), metrics, 1 vs 2 processes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_challenge.engine.schedule import learning_rate_factor
from ssl_challenge.engine.run_control import Preempted
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


def start_worker(run_dir, epochs=40):
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    return subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "rot", str(epochs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_iterations(run_dir, count, process, timeout=120):
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and sum(1 for line in metrics.read_text().splitlines() if '"iteration"' in line) >= count:
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError("the worker made no progress")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL])
def test_killed_worker_resumes_to_identical_weights(tmp_path, signum):
    epochs = 4
    uninterrupted = start_worker(tmp_path / "reference", epochs)  # same process settings (threads) as the killed one
    assert uninterrupted.wait(timeout=120) == 0
    reference = tmp_path / "reference" / "model.pth"
    process = start_worker(tmp_path / "killed", epochs)
    wait_for_iterations(tmp_path / "killed", 8, process)  # mid-epoch 2 (6 iterations per epoch)
    process.send_signal(signum)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0
    if signum != signal.SIGKILL:
        assert "Preempted" in output and f"{signal.Signals(signum).name} received" in output
    assert not (tmp_path / "killed" / "model.pth").exists()
    assert (tmp_path / "killed" / "checkpoint.pth").exists()
    finished = start_worker(tmp_path / "killed", epochs)
    output = finished.communicate(timeout=120)[0]
    assert finished.returncode == 0, output
    assert "resumed from" in output
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
