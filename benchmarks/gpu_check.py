"""One command for a machine with one NVIDIA GPU (at most ~8 minutes): the GPU paths of the pipeline, measured.

1. ResNet-50 training steps of ROT, DC and ODC through the engine's own step (``engine.train.train_step``: image
   batch, learning rate, forward, backward, finiteness check, SGD, the method's after-step: ODC's memory at
   ImageNet size, N = 1,281,167, k = 10,000), in images per second, against a pure forward/backward + SGD of
   the same network input (backbone, linear head, cross-entropy) in this process. Per-GPU batches of the
   reference recipes on 8 GPUs: ROT 16 images (64 rotated inputs), DC and ODC 64 images, 224 px.
   Target: ratio >= 0.9 (../shared/PERFORMANCE.md).
2. faiss k-means on the GPU at full scale (1,281,167 x 256 -> 10,000 clusters, 20 iterations) and DC's PCA
   (2048 -> 256) on the GPU: the clustering minutes per DC epoch.
3. The VOC07 SVM protocol (5011 x 8192 trainval, 4952 test, 20 classes, 19 costs) with the exact solver on CUDA,
   against the sequential liblinear reference on this machine's CPU (by default timed on 1 class and multiplied
   by 20; ``--reference-classes 20`` times all of them, ~25 min).

    python benchmarks/gpu_check.py                   # needs CUDA; prints the table
    python benchmarks/gpu_check.py --cpu             # the same code paths at tiny sizes on the CPU (a dry run)

It exits with a message on a machine without CUDA (unless ``--cpu``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svm_protocol's synthetic features

from ssl_challenge.clustering.kmeans import kmeans  # noqa: E402
from ssl_challenge.clustering.pca import pca_whiten_normalise  # noqa: E402
from ssl_challenge.core.config import from_dict  # noqa: E402
from ssl_challenge.data.images import PreloadedImages  # noqa: E402
from ssl_challenge.engine.checkpoint import RunPosition  # noqa: E402
from ssl_challenge.engine.train import PretrainConfig, build_optimizer, check_run_settings, train_step  # noqa: E402
from ssl_challenge.stages.pretraining import build_pretraining_method  # noqa: E402

FULL = {"samples": 1_281_167, "clusters": 10_000, "image": 224, "stored": 256, "backbone": {"name": "resnet50"},
        "batches": {"rot": 16, "dc": 64, "odc": 64}, "steps": 20, "warmup": 5, "kmeans_points": 1_281_167,
        "kmeans_dims": 256, "pca_input": 2048, "svm": (5011, 4952, 8192, 20)}
TINY = {"samples": 2000, "clusters": 20, "image": 32, "stored": 40, "backbone": {"name": "small_resnet"},
        "batches": {"rot": 4, "dc": 8, "odc": 8}, "steps": 2, "warmup": 1, "kmeans_points": 5000,
        "kmeans_dims": 16, "pca_input": 64, "svm": (200, 150, 64, 2)}


class RepeatedImages:
    """``samples`` indices over a few stored images (index modulo their count): a training set of ImageNet's
    size for the methods' memories without ImageNet in memory."""

    def __init__(self, images: PreloadedImages, samples: int):
        self.images, self.samples = images, samples

    def __len__(self) -> int:
        return self.samples

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        return self.images.load_batch(indices % len(self.images), augment, generator)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds of ``step()`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronise(device)
        start = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def method_step_seconds(name: str, sizes: dict, device: torch.device, images, precision: str) -> float:
    """One engine step of method ``name`` (median seconds), its state initialised as after the first epoch."""
    config = from_dict(PretrainConfig, {
        "method": name, "backbone": sizes["backbone"], "epochs": 1, "batch_size": sizes["batches"][name],
        "optimizer": {"lr": 0.01}, "precision": precision, "channels_last": device.type == "cuda",
        "method_options": {} if name == "rot" else {"num_clusters": sizes["clusters"]}}, where=f"gpu_check.{name}")
    check_run_settings(config, device, world=1, deterministic=False)
    method = build_pretraining_method(config, sizes["samples"]).to(device)
    if config.channels_last:
        method = method.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    if name == "dc":
        method.labels.copy_(torch.randint(0, sizes["clusters"], (sizes["samples"],), generator=generator))
        method.clustered.fill_(True)
    if name == "odc":
        dim = method.clustering.options.neck_out_dim
        features = F.normalize(torch.randn(sizes["samples"], dim, generator=generator), dim=1)
        method.clustering.initialise(features.to(device),
                                     torch.randint(0, sizes["clusters"], (sizes["samples"],), generator=generator)
                                     .to(device), seed=0)
    method.train()
    optimizer = build_optimizer(method, config.optimizer)
    run = RunPosition(order=torch.randperm(sizes["samples"], generator=generator))
    iterations = len(run.order) // config.batch_size

    def step():
        train_step(method, optimizer, images, config, run, iterations, config.batch_size, device)
        run.position, run.iteration = (run.position + 1) % iterations, run.iteration + 1

    return timed_steps(step, device, sizes["warmup"], sizes["steps"])


def pure_step_seconds(inputs: int, sizes: dict, device: torch.device, precision: str) -> float:
    """A forward/backward + SGD step of the backbone and a linear head on ``inputs`` ready images (no data, no
    method): the floor the method steps are compared with."""
    from ssl_challenge.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(sizes["backbone"]).to(device)
    head = torch.nn.Linear(backbone.out_dim, sizes["clusters"]).to(device)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)
    batch = torch.randn(inputs, 3, sizes["image"], sizes["image"], device=device)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, sizes["clusters"], (inputs,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(head(backbone.pooled(batch)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_steps(step, device, sizes["warmup"], sizes["steps"])


def training_table(sizes: dict, device: torch.device, precision: str) -> list[str]:
    stored = torch.randint(0, 256, (256, 3, sizes["stored"], sizes["stored"]), dtype=torch.uint8)
    images = RepeatedImages(PreloadedImages(stored.to(device), crop_size=sizes["image"]), sizes["samples"])
    rows = []
    for name in ("rot", "dc", "odc"):
        batch = sizes["batches"][name]
        inputs = 4 * batch if name == "rot" else batch  # ROT's network sees the four rotations
        method = method_step_seconds(name, sizes, device, images, precision)
        pure = pure_step_seconds(inputs, sizes, device, precision)
        rows.append(f"| {name.upper()} training step ({precision}, {inputs} inputs) | {inputs / method:,.0f} inputs/s | "
                    f"{inputs / pure:,.0f} inputs/s (pure fwd/bwd) | {pure / method:.3f} (target >= 0.9) |")
        print(rows[-1], flush=True)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def clustering_table(sizes: dict, device: torch.device) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(sizes["kmeans_points"], sizes["kmeans_dims"], generator=generator)
    use_gpu = True if device.type == "cuda" else False
    synchronise(device)
    start = time.perf_counter()
    kmeans(points, sizes["clusters"], iterations=20, seed=0, use_gpu=use_gpu)
    kmeans_seconds = time.perf_counter() - start
    features = torch.rand(sizes["kmeans_points"], sizes["pca_input"], generator=generator).to(device)
    synchronise(device)
    start = time.perf_counter()
    pca_whiten_normalise(features, sizes["kmeans_dims"])
    synchronise(device)
    pca_seconds = time.perf_counter() - start
    del features
    where = "GPU faiss" if use_gpu else "CPU faiss"
    rows = [f"| k-means {sizes['kmeans_points']:,d} x {sizes['kmeans_dims']} -> {sizes['clusters']:,d}, 20 it. "
            f"({where}) | {kmeans_seconds:.1f} s | | |",
            f"| PCA {sizes['pca_input']} -> {sizes['kmeans_dims']} + whitening ({device.type}) | {pca_seconds:.1f} s | | |",
            f"| clustering per DC epoch | {(kmeans_seconds + pca_seconds) / 60:.2f} min | | |"]
    for row in rows:
        print(row, flush=True)
    return rows


def svm_table(sizes: dict, device: torch.device, reference_classes: int) -> list[str]:
    from svm_protocol import synthetic_voc_features

    from ssl_challenge.evaluation.svm import protocol_costs, train_and_test_full_svm

    train, test, dims, classes = sizes["svm"]
    train_x, train_y, test_x, test_y = synthetic_voc_features(train, test, dims, classes)
    names = [f"class{c:02d}" for c in range(classes)]
    costs = protocol_costs([1.0, 10.0, 100.0], extra_powers=True)
    fast = train_and_test_full_svm(train_x, train_y, test_x, test_y, costs, names, n_jobs=1, solver="newton",
                                   device=str(device))
    timed = max(1, min(reference_classes, classes))
    base = train_and_test_full_svm(train_x, train_y[:, :timed], test_x, test_y[:, :timed], costs, names[:timed],
                                   n_jobs=1, solver="liblinear")
    reference_seconds = base["seconds"] * classes / timed
    agree = all(base["per_class"][name]["cost"] == fast["per_class"][name]["cost"] for name in names[:timed])
    how = "timed" if timed == classes else f"{timed} class(es) timed, x {classes / timed:g}"
    row = (f"| SVM protocol {train} x {dims}, {classes} classes, {len(costs)} costs: newton on {device.type} | "
           f"{fast['seconds']:.1f} s | liblinear sequential on the CPU {reference_seconds:.0f} s ({how}) | "
           f"{reference_seconds / fast['seconds']:.0f}x (target >= 300x); same costs on the timed classes: {agree} |")
    print(row, flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: exercises the code, no figures")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--reference-classes", type=int, default=1, help="classes liblinear is timed on")
    parser.add_argument("--skip", nargs="*", default=[], choices=["training", "clustering", "svm"])
    args = parser.parse_args()
    if args.cpu:
        device, sizes = torch.device("cpu"), TINY
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (torch.cuda.is_available() is False). Run it on a machine "
                         "with an NVIDIA GPU, or with --cpu for a tiny dry run of the same code on the CPU.")
    else:
        device, sizes = torch.device("cuda", 0), FULL
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    print("| measurement | result | baseline | ratio |\n|---|---|---|---|", flush=True)
    rows = []
    if "training" not in args.skip:
        rows += training_table(sizes, device, args.precision)
    if "clustering" not in args.skip:
        rows += clustering_table(sizes, device)
    if "svm" not in args.skip:
        rows += svm_table(sizes, device, args.reference_classes)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
