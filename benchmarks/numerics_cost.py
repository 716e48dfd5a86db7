"""What deterministic CPU numerics cost a training step (``resources.deterministic``; see
docs/reproducibility.md and ``ssl_challenge/core/numerics.py``).

Deterministic mode pins the numerical libraries when they load (MKL's code path, ATen's vector width, OpenBLAS's
and oneDNN's kernels) and runs convolutions in fixed chunks (``ssl_challenge/core/chunked_conv.py``), so the two modes
cannot share a process: each measurement is a fresh worker process, the two modes alternating round after round
on the same cores (this machine is noisy: compare the ratios of one run). A step is gpu_check.py's pure step,
here on the CPU: SGD on the backbone with a 4-way linear head on its pooled last stage (forward, cross-entropy,
backward, update); the worker reports the median step time and, in each mode's first round, the share of its
steps spent in convolutions (forward, backward) and BatchNorm.

    PYTHONPATH=src .venv/bin/python benchmarks/numerics_cost.py            # embedded backbone (~1 min)
    PYTHONPATH=src .venv/bin/python benchmarks/numerics_cost.py --resnet50 # and ResNet-50 at 224 px (~4 min)
    PYTHONPATH=src .venv/bin/python benchmarks/numerics_cost.py --rounds 1 --steps 1 --batch 64  # seconds (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = {"deterministic": True, "fast": False}
# (backbone config, image size, batch): the embedded default's ROT batch (128 images x 4 rotations, 32 px), and a
# small ResNet-50 batch at the full-scale crop (its CPU step is seconds)
SHAPES = {
    "small_resnet": ({"name": "small_resnet"}, 32, 512),
    "resnet50": ({"name": "resnet50"}, 224, 16),
}
OP_CLASSES = {  # profiler op name -> class (self CPU time)
    # (deterministic mode's chunked convolutions: with 2+ threads their chunks run on a pool's threads, which the
    # profiler does not record; the calling thread's wait is then the self time of the Function's own events)
    "convolution forward": ("aten::mkldnn_convolution", "aten::_nnpack_spatial_convolution",
                            "aten::_slow_conv2d_forward", "aten::thnn_conv2d", "_ChunkedConv2d"),
    "convolution backward": ("aten::convolution_backward", "_ChunkedConv2dBackward"),
    "batch norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                   "aten::_batch_norm_impl_index", "aten::_native_batch_norm_legit"),
}


def worker(shape: str, deterministic: bool, threads: int, steps: int, profile: bool, batch: int | None = None
           ) -> dict:
    """Median seconds of gpu_check's pure training step (backbone + linear head, SGD) in this numerics mode and,
    with ``profile``, the shares of the op classes over all its steps. ``batch``: images per step (default: the
    shape's own)."""
    from ssl_challenge.core.numerics import pin_environment, start_numerics

    pin_environment(threads, deterministic)  # before torch loads: the pins are read once
    import torch

    from gpu_check import pure_step_seconds  # imports torch: only after the pins

    start_numerics(threads, deterministic)
    backbone_config, size, shape_batch = SHAPES[shape]
    batch = batch or shape_batch
    sizes = {"backbone": dict(backbone_config), "clusters": 4, "image": size, "warmup": 1, "steps": steps}
    if not profile:
        return {"median_s": pure_step_seconds(batch, sizes, torch.device("cpu"), "fp32")}
    from torch.profiler import profile as torch_profile

    with torch_profile() as profiler:
        median = pure_step_seconds(batch, sizes, torch.device("cpu"), "fp32")
    totals = {name: 0.0 for name in OP_CLASSES}
    everything = 0.0
    for event in profiler.key_averages():
        everything += event.self_cpu_time_total
        for name, ops in OP_CLASSES.items():
            if event.key in ops:
                totals[name] += event.self_cpu_time_total
    shares = {name: value / everything for name, value in totals.items()} if everything else {}
    return {"median_s": median, "shares": shares}


def run_worker(shape: str, mode: str, threads: int, steps: int, profile: bool, batch: int | None = None) -> dict:
    from ssl_challenge.core.numerics import DETERMINISTIC_ENVIRONMENT, DETERMINISTIC_VARIABLE, THREAD_VARIABLES

    pinned = {*DETERMINISTIC_ENVIRONMENT, *THREAD_VARIABLES, DETERMINISTIC_VARIABLE}
    environment = {key: value for key, value in os.environ.items() if key not in pinned}  # the worker pins its own
    command = ([sys.executable, __file__, "--worker", shape, mode, str(threads), str(steps)]
               + (["--profile"] if profile else []) + ([f"--batch={batch}"] if batch else []))
    output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resnet50", action="store_true", help="also ResNet-50 at 224 px (batch 16)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads per worker")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two modes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per worker (after one warm-up)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per step for every backbone (default: 512 for small_resnet, 16 for resnet50)")
    parser.add_argument("--worker", nargs=4, metavar=("SHAPE", "MODE", "THREADS", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        shape, mode, threads, steps = arguments.worker
        print(json.dumps(worker(shape, MODES[mode], int(threads), int(steps), arguments.profile, arguments.batch)))
        return

    shapes = ["small_resnet"] + (["resnet50"] if arguments.resnet50 else [])
    print(f"{'backbone':<13} {'threads':>7} {'deterministic s/step':>21} {'fast s/step':>12} {'ratio':>6}   "
          "shares of the deterministic / fast step: conv forward, conv backward, batch norm")
    for shape in shapes:
        steps = arguments.steps if shape == "small_resnet" else max(2, arguments.steps // 2)
        for threads in arguments.threads:
            times = {mode: [] for mode in MODES}
            shares = {}
            for round_index in range(arguments.rounds):
                for mode in MODES:
                    result = run_worker(shape, mode, threads, steps, round_index == 0, arguments.batch)
                    times[mode].append(result["median_s"])
                    shares.setdefault(mode, result.get("shares"))
            deterministic, fast = (statistics.median(times[mode]) for mode in MODES)
            share_text = " / ".join(", ".join(f"{value:.0%}" for value in shares[mode].values()) for mode in MODES)
            print(f"{shape:<13} {threads:>7} {deterministic:>21.3f} {fast:>12.3f} {deterministic / fast:>5.2f}x   "
                  f"{share_text}", flush=True)


if __name__ == "__main__":
    main()
