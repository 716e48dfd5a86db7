"""Training (resumable) and inference of the frozen-backbone detector.

Training runs a fixed number of iterations of ``images_per_batch`` images: SGD with momentum, Detectron's
linear warm-up and step decay, biases at twice the learning rate and without weight decay (Detectron's
``BIAS_DOUBLE_LR`` / ``BIAS_WEIGHT_DECAY`` defaults). Every random draw (the epoch's image order, the flips,
torchvision's RPN and RoI samplers) is derived from (seed, epoch) or (seed, iteration), so a run killed and
resumed from its checkpoint ends with the same weights as an uninterrupted one. A checkpoint (the engine's
format and restore helper) is written every ``checkpoint_every`` iterations and when SIGTERM or SIGUSR1
arrives; the job then raises :class:`..engine.run_control.Preempted`.

Images reach both loops through ``data.loading.load_batches``: with ``workers`` > 0 DataLoader worker processes
decode and flip the next batches ahead (pinned memory on CUDA). A batch is asked for by what determines it
(:class:`.data.DetectionRequest`: its images and their flips, drawn here from (seed, iteration)), so the
number of workers changes no image, flip or target, and a resumed run asks for the batches an uninterrupted one
would. The samplers' draws from the global torch RNG stay in this process, seeded before each forward pass.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..data.loading import check_workers, load_batches
from ..engine.checkpoint import RunPosition, restore_checkpoint, save_checkpoint
from ..engine.schedule import learning_rate_factor
from ..engine.run_control import NonFiniteValues, checkpoint_or_stop, derived_seed, stop_requests, truncate_metrics
from ..core.finite import non_finite_tensors
from ..core.io import append_jsonl
from .data import DetectionRequest, DetectionSet, continuous_to_voc, flip_boxes, load_detection_batch
from .model import FrozenBackboneDetector


@dataclass(frozen=True)
class SolverConfig:
    iterations: int
    lr: float
    steps: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iterations: int = 0
    warmup_factor: float = 1.0 / 3.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    images_per_batch: int = 2
    flip: bool = True
    checkpoint_every: int = 1000
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.iterations < 1 or self.images_per_batch < 1 or self.checkpoint_every < 1:
            raise ValueError("evaluation.voc07_detection: iterations, images_per_batch and checkpoint_every must "
                             f"be >= 1, got {self.iterations}, {self.images_per_batch}, {self.checkpoint_every}")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"evaluation.voc07_detection.steps: expected increasing iterations, got {self.steps}")


def parameter_groups(detector: torch.nn.Module, config: SolverConfig) -> list[dict]:
    weights, biases = [], []
    for name, parameter in detector.named_parameters():
        if parameter.requires_grad:
            (biases if name.endswith(".bias") else weights).append(parameter)
    return [{"params": weights, "lr": config.lr, "base_lr": config.lr, "weight_decay": config.weight_decay},
            {"params": biases, "lr": 2 * config.lr, "base_lr": 2 * config.lr, "weight_decay": 0.0}]


def batch_indices(config: SolverConfig, iteration: int, num_images: int,
                  orders: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The images of ``iteration``: consecutive slices of a per-epoch permutation seeded by (seed, epoch)
    (kept in ``orders``, {epoch: permutation}, when given: one permutation per epoch for many iterations)."""
    per_epoch = max(1, num_images // config.images_per_batch)
    epoch, position = divmod(iteration, per_epoch)
    orders = {} if orders is None else orders
    if epoch not in orders:
        orders.clear()
        orders[epoch] = torch.randperm(num_images,
                                       generator=torch.Generator().manual_seed(derived_seed(config.seed, epoch)))
    return orders[epoch][position * config.images_per_batch:(position + 1) * config.images_per_batch]


def training_requests(config: SolverConfig, first: int, num_images: int) -> list[DetectionRequest]:
    """The batches of iterations ``first`` .. ``config.iterations - 1``: each iteration's images
    (:func:`batch_indices`) and their flips (a generator of (seed, iteration); none unless ``config.flip``)."""
    orders: dict[int, torch.Tensor] = {}
    requests = []
    for iteration in range(first, config.iterations):
        indices = batch_indices(config, iteration, num_images, orders)
        flips = torch.Generator().manual_seed(derived_seed(config.seed, iteration, 1))
        draws = torch.rand(len(indices), generator=flips).tolist()
        requests.append(DetectionRequest(tuple(indices.tolist()), tuple(config.flip and draw < 0.5 for draw in draws),
                                         training=True))
    return requests


def train_detector(detector: FrozenBackboneDetector, dataset: DetectionSet, config: SolverConfig, run_dir: str | Path,
                   device: torch.device, digest: str, log: Callable[[str], None] = print,
                   proposals: dict[str, np.ndarray] | None = None, stop_after_iterations: int | None = None,
                   log_every: int = 20, workers: int = 0) -> bool:
    """Train (or resume) in ``run_dir`` (``checkpoint.pth``, ``metrics.jsonl``); returns True when all
    iterations are done (the trained weights are in ``detector``), False when ``stop_after_iterations`` stopped
    it (tests: a simulated kill after a checkpoint). ``digest`` identifies the run (config, backbone, data):
    a checkpoint of another run is refused. ``workers``: DataLoader processes making the next batches
    (``resources.data_workers``; 0: this process, when needed); no result depends on it."""
    workers = check_workers(workers)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, metrics_path = run_dir / "checkpoint.pth", run_dir / "metrics.jsonl"
    detector.to(device).train()
    optimizer = torch.optim.SGD(parameter_groups(detector, config), lr=config.lr, momentum=config.momentum)
    run = RunPosition()
    if checkpoint_path.exists():
        run = restore_checkpoint(checkpoint_path, detector, optimizer, digest)
        log(f"resumed from {checkpoint_path} at iteration {run.iteration}")
        truncate_metrics(metrics_path, run.iteration)
    elif metrics_path.exists():
        metrics_path.unlink()

    def checkpoint() -> None:
        if non_finite_tensors(detector.state_dict()):
            raise NonFiniteValues("the detector's weights hold NaN or infinity")
        save_checkpoint(checkpoint_path, detector, optimizer, run, digest)

    progress = tqdm(total=config.iterations, initial=run.iteration, desc="detection", mininterval=10,
                    dynamic_ncols=True)
    started = time.monotonic()
    with stop_requests() as stop:  # before the workers start: they inherit handlers, then ignore the signals
        requests = training_requests(config, run.iteration, len(dataset))
        for request, batch in zip(requests, load_batches(dataset, requests, workers, device, load_detection_batch)):
            losses = train_step(detector, optimizer, dataset, config, run.iteration, device, proposals, request, batch)
            total = sum(losses.values())
            if not np.isfinite(total):
                raise NonFiniteValues(f"detection: the loss is {total} at iteration {run.iteration + 1}; no "
                                      "checkpoint holds the diverged state. Lower evaluation.voc07_detection.lr")
            run.iteration += 1
            run.last_loss = total
            run.train_seconds += time.monotonic() - started
            started = time.monotonic()
            progress.update()
            if run.iteration % log_every == 0 or run.iteration == config.iterations:
                record = {"iteration": run.iteration, "loss": total, **losses,
                          "lr": optimizer.param_groups[0]["lr"], "train_seconds": round(run.train_seconds, 3)}
                append_jsonl(metrics_path, record)
                log(f"iteration {run.iteration}/{config.iterations}: loss {total:.4f} ("
                    + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + ")")
            if run.iteration == config.iterations:
                break
            if checkpoint_or_stop(run, config.checkpoint_every, stop, checkpoint, progress, stop_after_iterations):
                return False
    progress.close()
    return True


def train_step(detector, optimizer, dataset: DetectionSet, config: SolverConfig, iteration: int,
               device: torch.device, proposals: dict[str, np.ndarray] | None, request: DetectionRequest,
               batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> dict[str, float]:
    """One iteration on ``batch``, the images and targets of ``request`` (:func:`training_requests`)."""
    images, targets, given = [], [], []
    for index, flip, (image, target) in zip(request.indices, request.flips, batch):
        images.append(image.to(device, non_blocking=True))
        targets.append({key: value.to(device, non_blocking=True) for key, value in target.items()})
        if proposals is not None:
            boxes = torch.from_numpy(proposals[dataset.images[index].image_id])
            given.append((flip_boxes(boxes, image.shape[-1]) if flip else boxes).to(device))
    if proposals is not None:
        detector.given_proposals.set_batch(given, [tuple(image.shape[-2:]) for image in images])
    factor = learning_rate_factor(iteration, 1, config.warmup_iterations, config.steps, config.gamma,
                                  config.warmup_factor)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    torch.manual_seed(derived_seed(config.seed, iteration, 2))  # torchvision's samplers draw from the global RNG
    losses = detector(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {name: float(value.detach()) for name, value in losses.items()}


@torch.no_grad()
def detect(detector: FrozenBackboneDetector, dataset: DetectionSet, device: torch.device, batch_size: int = 8,
           proposals: dict[str, np.ndarray] | None = None, workers: int = 0) -> dict[str, list[tuple]]:
    """Detections {class: [(image id, score, xmin, ymin, xmax, ymax) in VOC 1-based pixels]} over ``dataset``,
    image by image in the split's order, each image's detections by decreasing score. ``workers``: DataLoader
    processes decoding the next batches (``resources.data_workers``); no detection depends on it."""
    workers = check_workers(workers)
    detector.to(device).eval()
    detections: dict[str, list[tuple]] = {name: [] for name in dataset.classes}
    requests = []
    for start in range(0, len(dataset), batch_size):
        indices = tuple(range(start, min(start + batch_size, len(dataset))))
        requests.append(DetectionRequest(indices, (False,) * len(indices), training=False))
    batches = load_batches(dataset, requests, workers, device, load_detection_batch)
    for request, batch in tqdm(zip(requests, batches), total=len(requests), desc="detection test", mininterval=10):
        indices = request.indices
        images = [image.to(device, non_blocking=True) for image, _ in batch]
        if proposals is not None:
            detector.given_proposals.set_batch(
                [torch.from_numpy(proposals[dataset.images[index].image_id]).to(device) for index in indices],
                [tuple(image.shape[-2:]) for image in images])
        for index, output in zip(indices, detector(images)):
            boxes = continuous_to_voc(output["boxes"].double().cpu().numpy())
            image_id = dataset.images[index].image_id
            for box, score, label in zip(boxes.tolist(), output["scores"].double().cpu().tolist(),
                                         output["labels"].cpu().tolist()):
                detections[dataset.classes[label - 1]].append((image_id, float(score), *box))
    return detections


def run_digest(*parts) -> str:
    """A short digest of JSON-able parts (config, backbone file digest, data)."""
    text = json.dumps([asdict(part) if hasattr(part, "__dataclass_fields__") else part for part in parts],
                      sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
