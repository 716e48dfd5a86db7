"""Two processes (torchrun, gloo on the CPU) against one process at the same global batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("worker.py")
REPO = Path(__file__).parents[2]


def run_worker(run_dir, method, processes, seed=0, epochs=3, batch_size=32, sync_bn=False):
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}", OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + [str(WORKER), str(run_dir), method, str(epochs),
                                                                   str(seed), str(batch_size)]
    command += ["sync_bn"] if sync_bn else []
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return torch.load(Path(run_dir) / "model.pth", weights_only=True)["backbone"]


def relative_distance(first, second):
    keys = [key for key in first if first[key].is_floating_point() and "running" not in key]
    difference = sum(float((first[k] - second[k]).pow(2).sum()) for k in keys)
    return (difference / sum(float(first[k].pow(2).sum()) for k in keys)) ** 0.5


def pair_agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """Rand index of two labelings: the fraction of sample pairs both put together or both apart (cluster ids may
    be permuted)."""
    same_first = first[:, None] == first[None, :]
    same_second = second[:, None] == second[None, :]
    return float((same_first == same_second).float().mean())


def final_labels(run_dir) -> torch.Tensor:
    state = torch.load(Path(run_dir) / "checkpoint.pth", weights_only=True)["method"]
    return next(value for key, value in state.items() if key.endswith("labels") and value.ndim == 1)


@pytest.mark.parametrize("method", ["rot", "dc", "odc"])
def test_two_processes_match_one_at_the_same_global_batch(tmp_path, method):
    one = run_worker(tmp_path / "one", method, 1)
    two = run_worker(tmp_path / "two", method, 2)
    other_seed = run_worker(tmp_path / "seed1", method, 1, seed=1)
    initial = run_worker(tmp_path / "initial", "random", 1, epochs=0)
    moved = relative_distance(one, initial)  # how far training moved the weights
    # The only difference between 1 and 2 processes is BatchNorm's statistics (per-rank halves of each batch, and
    # per-rank running statistics), so the runs must agree far better than runs with another seed do.
    distance = relative_distance(one, two)
    print(f"{method}: 1 vs 2 processes: {distance:.4g}; 1 vs another seed: "
          f"{relative_distance(one, other_seed):.4g}; moved {moved:.4g}")
    assert distance < 0.25 * relative_distance(one, other_seed)
    if method == "rot":
        assert distance < 0.25 * moved
    else:
        # The clustering methods barely move the trunk in 3 tiny epochs (their heads start at std 0.01), so the
        # weights cannot tell much apart: their pseudo-labels must agree instead (features, indices and memory
        # gathered across ranks), far better than with another seed. DC re-clusters from the gathered features:
        # measured 1.000 (another seed 0.858). ODC's labels move every iteration with the neck's features, and its
        # neck's BatchNorm1d sees per-rank halves of each batch (16 samples here), so labels at cluster borders
        # differ: measured 0.882 (another seed 0.643).
        agreement = pair_agreement(final_labels(tmp_path / "one"), final_labels(tmp_path / "two"))
        other = pair_agreement(final_labels(tmp_path / "one"), final_labels(tmp_path / "seed1"))
        print(f"{method}: label pair agreement 1 vs 2 processes {agreement:.3f}, 1 vs another seed {other:.3f}")
        assert agreement >= {"dc": 0.95, "odc": 0.8}[method]
        assert agreement > other + 0.1
