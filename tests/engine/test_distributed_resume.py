"""Two processes (torchrun, gloo on the CPU) without sync_bn: a run stopped mid-epoch and resumed ends exactly as
an uninterrupted one, and a feature pass uses rank 0's BatchNorm statistics on every rank."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from ssl_challenge.engine import distributed

WORKER = Path(__file__).with_name("batchnorm_resume_worker.py")
REPO = Path(__file__).parents[2]


def run_two_processes(run_dir: Path, stop_after: int, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER),
               str(run_dir), str(stop_after), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def states(run_dir: Path) -> list[dict]:
    return [torch.load(run_dir / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def assert_equal_states(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, different


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_two_processes(whole, 0, "feature_pass")
    run_two_processes(resumed, 2)  # killed after iteration 2 of epoch 1's 3, with a checkpoint there
    run_two_processes(resumed, 0)
    # Every rank's whole state (weights, BatchNorm statistics, DC's labels of both epochs) bit for bit: before the
    # statistics were broadcast, the resumed run's rank 1 continued from rank 0's statistics (the checkpoint's),
    # the uninterrupted one from its own, and epoch 2's clustering saw different features for rank 1's shard.
    for rank, (expected, found) in enumerate(zip(states(whole), states(resumed))):
        assert_equal_states(expected, found)
    assert any("running_mean" in key for key in states(whole)[0])  # the network has BatchNorm statistics

    passes = [torch.load(whole / f"features{rank}.pt", weights_only=True) for rank in range(2)]
    # After the feature pass both ranks hold rank 0's statistics, and rank 1's moved ones were used by nobody: the
    # gathered features are those rank 0's network gives alone over the whole set.
    assert_equal_states(passes[0]["statistics"], passes[1]["statistics"])
    assert passes[0]["statistics"].keys() and all(
        torch.equal(value, states(whole)[0][key]) for key, value in passes[0]["statistics"].items())
    for rank in range(2):
        torch.testing.assert_close(passes[rank]["features"], passes[0]["reference"], rtol=1e-5, atol=1e-6)
    # The check can fail: rank 1's moved statistics give other features.
    assert (passes[1]["reference"] - passes[0]["reference"]).abs().max() > 0.1


def test_broadcasting_batchnorm_statistics_on_one_process_changes_nothing():
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    network(torch.randn(5, 3))  # running statistics away from their initial values
    before = {key: value.clone() for key, value in network.state_dict().items()}
    distributed.broadcast_batchnorm_buffers_(network)
    assert_equal_states(before, network.state_dict())
