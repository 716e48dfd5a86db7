"""`make preflight`: before spending GPU-hours, the pipeline's GPU paths on one GPU node, and what the full run costs.

1. benchmarks/gpu_check.py at the configured precision: ResNet-50 training steps of ROT, DC and ODC against a pure
   forward/backward of the same inputs, k-means (faiss) and PCA on the GPU, the SVM protocol on CUDA.
2. The full-scale miniature (`make fullscale_check`'s configuration: config/challenge.yaml with the sizes of
   config/fullscale_check.yaml) on CUDA: every training job with DDP over all visible GPUs (one torchrun process
   each), the other GPU rules on one GPU, faiss on the GPU when the environment has a GPU build, the precision of
   config/challenge.yaml. In results/preflight/.
3. The training steps' throughput against the pure forward/backward, and the full run's training GPU-hours
   extrapolated from the measured per-GPU throughput (:func:`extrapolate_gpu_hours`).

On a machine without a CUDA GPU it says so and exits with status 1 before running anything.

    .venv/bin/python tools/preflight.py [--budget-seconds 420] [--skip-miniature]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHALLENGE = REPO / "config" / "challenge.yaml"
MINIATURE = REPO / "config" / "fullscale_check.yaml"
PREFLIGHT_DIR = REPO / "results" / "preflight"
IMAGENET_TRAIN_IMAGES = 1_281_167  # an epoch of pretraining at full scale
# The gpu_check row whose step a method's training step is: CLS classifies fixed pseudo-labels with the same
# network and batch as DC's step (without DC's clustering); a CODC member trains like its base method.
STEP_ROW = {"rot": "rot", "dc": "dc", "odc": "odc", "cls": "dc"}
ROTATIONS = 4  # ROT's network sees each image four times
# The GPU rules besides training (one GPU each), as profiles/slurm/config.yaml asks.
ONE_GPU_RULES = ("pseudo_labels", "codc_labels", "extract_voc07_features", "extract_places205_features",
                 "linear_probe", "imagenet_linear", "voc07_detection")
TRAINING_RULES = ("pretrain", "codc_round")


@dataclass(frozen=True)
class TrainingJob:
    """One training run of the full experiment: ``epochs`` over ``inputs_per_epoch`` network inputs, timed by
    gpu_check's ``step_row``; ``clusters_every_epoch`` for DC (k-means over the whole data set each epoch)."""
    name: str
    step_row: str
    epochs: int
    inputs_per_epoch: int
    clusters_every_epoch: bool = False


@dataclass(frozen=True)
class StepThroughput:
    precision: str
    inputs: int  # per GPU and step
    method_inputs_per_second: float  # per GPU
    pure_inputs_per_second: float  # per GPU: forward/backward + SGD of the same inputs, nothing else

    @property
    def ratio(self) -> float:
        return self.method_inputs_per_second / self.pure_inputs_per_second


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_jobs(config: dict, images_per_epoch: int = IMAGENET_TRAIN_IMAGES) -> list[TrainingJob]:
    """The training runs of a configuration: its trained models (epochs > 0), then each CODC member's rounds."""
    models = config.get("models", {})

    def job(name: str, method: str, epochs: int) -> TrainingJob:
        inputs = images_per_epoch * (ROTATIONS if method == "rot" else 1)
        return TrainingJob(name, STEP_ROW[method], epochs, inputs, clusters_every_epoch=method == "dc")

    jobs = [job(name, model["method"], model["epochs"]) for name, model in models.items()
            if model.get("epochs", 0) > 0 and model["method"] in STEP_ROW]
    for experiment, spec in config.get("codc", {}).items():
        for member in spec["members"]:
            base = models[member]["method"]
            if base in STEP_ROW:
                rounds = job(f"{experiment}.{member}", base, spec["epochs"] * spec.get("rounds", 1))
                jobs.append(TrainingJob(rounds.name, rounds.step_row, rounds.epochs, rounds.inputs_per_epoch))
    return jobs


def extrapolate_gpu_hours(jobs: list[TrainingJob], throughput: dict[str, StepThroughput],
                          clustering_seconds_per_epoch: float | None, gpus_per_job: int) -> dict[str, float]:
    """GPU-hours of each training job at the measured per-GPU throughput (inputs / (inputs/s) is GPU-seconds,
    whatever the number of GPUs, assuming DDP scales linearly), plus, for DC, its per-epoch clustering, during
    which all ``gpus_per_job`` GPUs of the job wait for the one that clusters. ``clustering_seconds_per_epoch``
    None: not measured, counted as 0."""
    hours = {}
    for job in jobs:
        seconds = job.epochs * job.inputs_per_epoch / throughput[job.step_row].method_inputs_per_second
        if job.clusters_every_epoch and clustering_seconds_per_epoch:
            seconds += job.epochs * clustering_seconds_per_epoch * gpus_per_job
        hours[job.name] = seconds / 3600
    return hours


STEP_PATTERN = re.compile(r"\| (ROT|DC|ODC) training step \((\w+), (\d+) inputs\) \| ([\d,.]+) inputs/s \| "
                          r"([\d,.]+) inputs/s \(pure fwd/bwd\)")
CLUSTERING_PATTERN = re.compile(r"\| clustering per DC epoch \| ([\d.]+) min")


def parse_gpu_check(output: str) -> tuple[dict[str, StepThroughput], float | None]:
    """gpu_check's training rows (method -> throughput) and its clustering minutes per DC epoch, in seconds."""
    throughput = {}
    for match in STEP_PATTERN.finditer(output):
        method, precision, inputs, measured, pure = match.groups()
        throughput[method.lower()] = StepThroughput(precision, int(inputs), float(measured.replace(",", "")),
                                                    float(pure.replace(",", "")))
    clustering = CLUSTERING_PATTERN.search(output)
    return throughput, float(clustering.group(1)) * 60 if clustering else None


def configured_precisions(config: dict) -> list[str]:
    """The precisions of the configuration's trained models (the schema's default is fp32)."""
    return sorted({model.get("precision", "fp32") for model in config.get("models", {}).values()
                   if model.get("epochs", 0) > 0})


def gpus_per_training_job() -> int:
    """The GPUs a pretraining job asks of the cluster (profiles/slurm/config.yaml, set-resources pretrain.gpu)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    return int(profile["set-resources"]["pretrain"]["gpu"])


def run(command: list[str], log: Path) -> tuple[int, str]:
    """Run ``command`` from the repository root, its output shown and kept in ``log``; (status, output)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    env.setdefault("SLURM_CONF", "/dev/null")
    print("$ " + " ".join(command), flush=True)
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    with open(log, "w") as file:
        for line in process.stdout:
            print(line, end="", flush=True)
            file.write(line)
            lines.append(line)
    return process.wait(), "".join(lines)


def miniature_commands(gpus: int, fashion_mnist_dir: str) -> list[list[str]]:
    """Build the miniature tree, then run its whole DAG with every training job on ``gpus`` GPUs (DDP)."""
    resources = [f"{rule}:gpu={gpus}" for rule in TRAINING_RULES] + [f"{rule}:gpu=1" for rule in ONE_GPU_RULES]
    return [
        [sys.executable, "-m", "ssl_challenge.data.miniature", str(PREFLIGHT_DIR / "data"),
         "--fashion-mnist-dir", fashion_mnist_dir],
        [sys.executable, "-m", "snakemake", "all_tracks", "--profile", "profiles/local", "--directory",
         str(PREFLIGHT_DIR), "--resources", f"gpu={gpus}", "--set-resources", *resources,
         "--configfile", str(CHALLENGE), str(MINIATURE)],
    ]


def report(throughput: dict[str, StepThroughput], hours: dict[str, float], gpus_per_job: int) -> str:
    lines = ["", "Training-step throughput per GPU (benchmarks/gpu_check.py), against a pure forward/backward:"]
    for method, row in sorted(throughput.items()):
        lines.append(f"  {method.upper():4s} {row.precision}, {row.inputs} inputs per step: "
                     f"{row.method_inputs_per_second:,.0f} inputs/s against {row.pure_inputs_per_second:,.0f} "
                     f"(ratio {row.ratio:.2f}; target >= 0.9)")
    lines += ["", f"Full-run training GPU-hours extrapolated from these ({IMAGENET_TRAIN_IMAGES:,d} images per "
              f"epoch, DDP scaling linearly, DC's clustering idling {gpus_per_job} GPUs):"]
    lines += [f"  {name:24s} {value:10,.0f}" for name, value in hours.items()]
    lines.append(f"  {'total':24s} {sum(hours.values()):10,.0f}  (training only: features, probes, SVMs and "
                 "detection come on top)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", default="420", help="gpu_check's time budget (per precision)")
    parser.add_argument("--skip-miniature", action="store_true", help="only the GPU check and the extrapolation")
    parser.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args(argv)
    gpus = visible_gpus()
    if gpus == 0:
        print("preflight: no CUDA GPU is visible here (torch.cuda.is_available() is False, or no device): it "
              "measures the pipeline's GPU paths, so run it on a GPU node (e.g. inside an interactive SLURM job "
              "with the GPUs of one training job). Nothing was run.", file=sys.stderr)
        return 1
    config = yaml.safe_load(CHALLENGE.read_text())
    PREFLIGHT_DIR.mkdir(parents=True, exist_ok=True)
    failures, outputs = [], ""
    for precision in configured_precisions(config):
        status, output = run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--precision", precision,
                              "--budget-seconds", args.budget_seconds], PREFLIGHT_DIR / f"gpu_check.{precision}.log")
        outputs += output
        if status:
            failures.append(f"benchmarks/gpu_check.py --precision {precision} (status {status})")
    if "no GPU faiss" in outputs or "faiss is not installed" in outputs:
        failures.append("faiss has no GPU build here: use envs/pipeline-gpu.yaml or requirements-gpu.txt")
    if not args.skip_miniature:
        started = time.monotonic()
        for step, command in zip(("miniature_data", "miniature"), miniature_commands(gpus, args.fashion_mnist_dir)):
            status, _ = run(command, PREFLIGHT_DIR / f"{step}.log")
            if status:
                failures.append(f"the full-scale miniature on {gpus} GPU(s) (status {status}; "
                                f"{os.path.relpath(PREFLIGHT_DIR / f'{step}.log', REPO)})")
                break
        else:
            print(f"\nThe full-scale miniature ran on CUDA with DDP over {gpus} GPU(s) in "
                  f"{time.monotonic() - started:.0f} s (results in {os.path.relpath(PREFLIGHT_DIR, REPO)}).")
    throughput, clustering = parse_gpu_check(outputs)
    jobs = training_jobs(config)
    missing = sorted({job.step_row for job in jobs} - set(throughput))
    if missing:
        failures.append(f"gpu_check measured no training step for {missing}: no GPU-hour extrapolation")
    else:
        per_job = gpus_per_training_job()
        print(report(throughput, extrapolate_gpu_hours(jobs, throughput, clustering, per_job), per_job))
    for failure in failures:
        print(f"preflight FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
