"""The generic pretraining loop: any method of ``ssl_challenge.methods`` over any image source.

Resumable by construction: a checkpoint (see ``checkpoint.py``) is written every ``checkpoint_every`` iterations,
at the end of every epoch, and when SIGTERM or SIGUSR1 arrives (SLURM's warning before a time limit or a
preemption); the job then exits with :class:`.run_control.Preempted` so that the scheduler's retry continues the
run. Every random draw is derived from (seed, epoch, iteration, rank), so an interrupted and resumed run ends with
weights identical to an uninterrupted one.

The loop receives a built method (``pretraining.build_pretraining_method``; the engine never imports the
methods). On several processes (torchrun) it wraps the method in ``DistributedDataParallel`` (gradients averaged
per bucket during the backward pass), with synchronised BatchNorm where the model asks for it (``sync_bn``); on
one process the method runs unwrapped, exactly as before. ``precision: bf16`` runs the forward pass under
``torch.autocast``; ``channels_last`` stores images and convolution weights in NHWC order (GPU tensor cores).
:func:`check_run_settings` refuses, before anything trains, a batch the processes cannot share or a precision
the device lacks.

A run that diverges stops at once: a NaN or infinite loss or gradient raises
:class:`.run_control.TrainingDiverged` before the optimiser applies it, naming the model, epoch, iteration and
last finite loss; no model file is written, and a checkpoint is never written from a state holding NaN or
infinity.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..core.config import ConfigError, from_dict
from ..data.images import PreloadedImages
from ..data.loading import BatchRequest, check_workers, load_batches
from ..core.finite import non_finite_tensors
from ..data.transforms import AugmentationConfig
from ..core.io import append_jsonl, torch_save_atomic, write_text_atomic
from ..core.numerics import deterministic_requested, numerics_record
from ..core import run_files
from . import distributed
from .checkpoint import RunPosition, restore_checkpoint, save_checkpoint
from .run_control import (NonFiniteValues, Preempted, checkpoint_or_stop, derived_seed, divergence_reported,
                          stop_requests, truncate_metrics)
from .context import EpochContext
from .inference import frozen_outputs
from .schedule import learning_rate_factor
from .sync_batchnorm import convert_sync_batchnorm, has_batchnorm


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_ratio: float = 0.1  # mmcv's linear warm-up starts at 0.1 x lr


@dataclass(frozen=True)
class PretrainConfig:
    """One model's pretraining (the ``models.<name>`` config entry)."""

    method: str
    backbone: dict
    epochs: int
    optimizer: OptimizerConfig
    batch_size: int = 256
    schedule: ScheduleConfig = ScheduleConfig()
    seed: int = 0
    checkpoint_every: int = 200
    snapshot_epochs: tuple[int, ...] = ()
    method_options: dict = field(default_factory=dict)
    # The image pipeline: built into the image source by the caller (stages.run_pretraining); kept here so that
    # a run's digest covers it.
    augmentation: AugmentationConfig = AugmentationConfig()
    # BatchNorm statistics over the global batch of all processes (the reference's SyncBN: ROT, ODC); no effect
    # on one process.
    sync_bn: bool = False
    # "fp32", or "bf16": the forward pass under torch.autocast (a CUDA GPU with bf16, or the CPU with
    # resources.deterministic off).
    precision: str = "fp32"
    # Images and convolution weights in channels-last (NHWC) memory order: faster convolutions on GPUs; refused on
    # the CPU in deterministic mode (ATen's channels-last BatchNorm splits its statistics over threads).
    channels_last: bool = False


PRECISIONS = ("fp32", "bf16")


def check_run_settings(config: PretrainConfig, device: torch.device, world: int, method: torch.nn.Module | None = None,
                       deterministic: bool | None = None) -> None:
    """Raise :class:`ConfigError` (naming the config key and what to do) for settings this run cannot honour: a
    batch the ``world`` processes cannot share, fewer than 2 samples per process for BatchNorm (``method``: any
    BatchNorm layer; unless ``sync_bn``), bf16 on a device without it, channels-last in deterministic CPU mode.
    Called before any image is loaded or any step runs."""
    if config.batch_size % world:
        raise ConfigError(f"batch_size: {config.batch_size} does not split over the {world} training processes; "
                          f"use a multiple of {world} or another number of processes (GPUs)")
    if config.batch_size // world < 2 and not config.sync_bn and (method is None or has_batchnorm(method)):
        raise ConfigError(f"batch_size: {config.batch_size} over {world} processes leaves "
                          f"{config.batch_size // world} sample per process, too few for BatchNorm statistics; raise "
                          "batch_size, use fewer processes, or set sync_bn: true")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision: {config.precision!r} is not one of {', '.join(PRECISIONS)}")
    deterministic = deterministic_requested() if deterministic is None else deterministic
    if config.precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision: bf16 needs a GPU with bfloat16 support (compute capability 8.0 or "
                              f"newer); {torch.cuda.get_device_name(device)} has none: set precision: fp32")
        if device.type == "cpu" and deterministic:
            raise ConfigError("precision: bf16 on the CPU is refused in deterministic mode (bf16 convolutions "
                              "need oneDNN, which deterministic numerics turn off): set precision: fp32, or "
                              "resources.deterministic: false")
    if config.channels_last and device.type == "cpu" and deterministic:
        raise ConfigError("channels_last: refused on the CPU in deterministic mode (channels-last BatchNorm "
                          "statistics depend on the thread count): set channels_last: false, or "
                          "resources.deterministic: false")


def seed_initialisation(seed: int) -> None:
    """Seed torch's global RNG for building a method (its heads' and backbone's initial weights): call it right
    before ``methods.build_method`` so that every process, and every rerun, starts from the same weights."""
    torch.manual_seed(derived_seed(seed, 0xB1D))


def digest_of(config: PretrainConfig, num_samples: int) -> str:
    import hashlib
    import json

    text = json.dumps({"config": asdict(config), "num_samples": num_samples}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_optimizer(method: torch.nn.Module, config: OptimizerConfig) -> torch.optim.SGD:
    base = asdict(config)
    groups = method.parameter_groups(base)
    for group in groups:
        group.setdefault("lr", config.lr)
        group["base_lr"] = group["lr"]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def feature_extractor(images, num_samples: int, batch_size: int, device: torch.device, method: torch.nn.Module,
                      workers: int = 0):
    """``EpochContext.extract_features``: ``fn`` over the whole set in index order, eval mode, no grad
    (``inference.run_frozen``); on several processes each rank extracts its shard and the shards are gathered
    (all ranks get Tensor[N, D])."""

    def extract(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        world, rank = distributed.world_size(), distributed.rank()
        shard = math.ceil(num_samples / world)
        indices = torch.arange(rank * shard, (rank + 1) * shard).clamp_(max=num_samples - 1)
        outputs = frozen_outputs(method, fn, images, batch_size, device, indices, workers, on_cpu=False)
        features = distributed.gather_concat(outputs)[:num_samples]
        if not bool(features.isfinite().all()):  # the same on every rank: all ranks stop together
            raise NonFiniteValues("the features extracted for the epoch's clustering/memory hold NaN or infinity")
        return features

    return extract


class TrainingStep(torch.nn.Module):
    """``forward(images, indices)`` = ``method.training_step``: the call DistributedDataParallel wraps (DDP hooks
    a module's forward; a method's step is not its forward)."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.method.training_step(images, indices)


def distributed_step(method: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The method's step wrapped in DDP (several processes). Buffers (pseudo-labels, ODC's memory, BatchNorm's
    running statistics) are not broadcast each step: the methods keep them equal on every rank themselves, and
    the model file is rank 0's."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(TrainingStep(method), device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def epoch_requests(images, config: PretrainConfig, run: RunPosition, iterations: int,
                   local_size: int) -> list[BatchRequest]:
    """This process's batches of the rest of the epoch (from ``run.position``). Preloaded images: the whole
    global batch drawn from one generator of (seed, epoch, position), this rank's slice kept (cheap for tensors
    in memory, and N processes see exactly the images one process sees). From files: this rank's slice only,
    each sample with its own generator of (seed, epoch, slot) (``data.loading.sample_seed``)."""
    rank, requests = distributed.rank(), []
    for position in range(run.position, iterations):
        start = position * config.batch_size
        global_indices = run.order[start : start + config.batch_size]
        mine = (rank * local_size, (rank + 1) * local_size)
        if isinstance(images, PreloadedImages):
            requests.append(BatchRequest(global_indices, True, derived_seed(config.seed, run.epoch, position, 2),
                                         keep=mine))
        else:
            requests.append(BatchRequest(global_indices[mine[0] : mine[1]], True,
                                         slot_seed=(config.seed, run.epoch, start + mine[0])))
    return requests


def process_mean_loss(loss: torch.Tensor) -> torch.Tensor:
    """The loss averaged over processes (the local loss on one): non-finite on every rank as soon as it is on
    one, so that all ranks stop together. DDP averages the gradients themselves during ``backward``."""
    loss = loss.detach().float().reshape(1)
    if distributed.world_size() == 1:
        return loss
    return distributed.all_reduce_mean(loss.clone())


def check_finite_step(method: torch.nn.Module, loss: torch.Tensor) -> None:
    """Raise :class:`NonFiniteValues` when the (process-averaged) loss or any gradient is NaN or infinite, before
    the optimiser would write it into the weights. One norm over all gradients (measured 2 ms per iteration for
    the embedded network on a busy CPU, several times cheaper than an element-wise test; the norm also overflows
    for gradients beyond ~1e19, a divergence too) and one device synchronisation."""
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
    finite = torch.stack([loss.reshape(()), grad_norm.to(loss.device, loss.dtype)]).isfinite()
    if not bool(finite.all()):
        what = f"the loss ({float(loss.reshape(()))})" if not bool(finite[0]) else "the gradient norm"
        raise NonFiniteValues(f"{what} is NaN or infinite")


def backbone_file(method: torch.nn.Module, config: PretrainConfig, run: RunPosition) -> dict:
    """The content of a model file (``models.backbones.read_model_file`` reads it). A backbone holding NaN or
    infinity is never written."""
    backbone = method.backbone
    if non_finite_tensors(backbone.state_dict()):
        raise NonFiniteValues(f"backbone tensors {non_finite_tensors(backbone.state_dict())[:3]} hold NaN or "
                              "infinity")
    device = next(backbone.parameters()).device
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processes": distributed.world_size(),
        "backbone_config": backbone.config,
        "backbone": {key: value.cpu() for key, value in backbone.state_dict().items()},
        "method": config.method,
        "epochs": run.epoch,
        "iterations": run.iteration,
        "train_seconds": run.train_seconds,
        "numerics": numerics_record(),
    }


def pretrain(
    config: PretrainConfig | dict,
    method: torch.nn.Module,
    images,
    run_dir: str | Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    stop_after_iterations: int | None = None,
    log_every: int = 20,
    name: str | None = None,
    data_workers: int = 0,
) -> Path | None:
    """Train (or resume) ``method`` (built for ``config`` and ``images``, e.g. by
    ``pretraining.build_pretraining_method``) in ``run_dir``; returns ``run_dir/model.pth`` (the backbone), or
    None when ``stop_after_iterations`` (tests: a simulated kill after a checkpoint) stopped it early. ``name``
    (the config key, e.g. ``models.rot``; default: ``run_dir``) names the model in errors. ``data_workers``:
    processes that make the batches ahead (``resources.data_workers``; 0: this process, when needed)."""
    if isinstance(config, dict):
        config = from_dict(PretrainConfig, config, where="model")
    late = [epoch for epoch in config.snapshot_epochs if not 0 < epoch <= config.epochs]
    if late:  # found now, not as a missing snapshot file after the training
        raise ConfigError(f"snapshot_epochs: {late} outside 1..{config.epochs} (epochs); a snapshot is taken after "
                          "an epoch that runs")
    run_dir = Path(run_dir)
    final_path, checkpoint_path, metrics_path = (run_dir / run_files.MODEL, run_dir / run_files.CHECKPOINT,
                                                 run_dir / run_files.METRICS)
    if final_path.exists():
        log(f"{final_path} exists: nothing to do")
        return final_path
    run_dir.mkdir(parents=True, exist_ok=True)
    world, rank = distributed.world_size(), distributed.rank()
    check_run_settings(config, device, world, method)
    check_workers(data_workers)
    num_samples = len(images)
    digest = digest_of(config, num_samples)

    method = method.to(device)
    if world > 1 and config.sync_bn:
        method = convert_sync_batchnorm(method, device)
    if config.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, config.optimizer)
    run = RunPosition()
    if checkpoint_path.exists():
        run = restore_checkpoint(checkpoint_path, method, optimizer, digest)
        log(f"resumed from {checkpoint_path}: epoch {run.epoch}, batch {run.position}, iteration {run.iteration}")
        if rank == 0:
            truncate_metrics(metrics_path, run.iteration)
    elif rank == 0 and metrics_path.exists():
        metrics_path.unlink()
    step = distributed_step(method, device) if world > 1 else method.training_step

    def checkpoint() -> None:
        if non_finite_tensors(method.state_dict()):  # never keep a diverged state to resume from
            raise NonFiniteValues(f"the method's state {non_finite_tensors(method.state_dict())[:3]} holds NaN or "
                                  "infinity")
        if rank == 0:
            save_checkpoint(checkpoint_path, method, optimizer, run, digest)
        distributed.barrier()

    extract = feature_extractor(images, num_samples, 2 * config.batch_size, device, method, data_workers)
    batch_size, local_size = config.batch_size, config.batch_size // world
    with stop_requests() as stop, divergence_reported(name or str(run_dir), run):
        while run.epoch < config.epochs:
            context = EpochContext(run.epoch, num_samples, device,
                                   torch.Generator().manual_seed(derived_seed(config.seed, run.epoch)), extract)
            started = time.monotonic()
            if run.order is None:
                method.train()
                method.before_epoch(context)
                run.order, run.position, run.totals = method.epoch_indices(context).cpu(), 0, {}
            iterations = max(1, len(run.order) // batch_size)
            method.train()
            progress = tqdm(total=iterations, initial=run.position, desc=f"{config.method} epoch {run.epoch + 1}",
                            disable=rank != 0, mininterval=10, dynamic_ncols=True)
            batches = load_batches(images, epoch_requests(images, config, run, iterations, local_size),
                                   data_workers, device)
            while run.position < iterations:
                logs = train_step(method, optimizer, next(batches), config, run, iterations, local_size, device,
                                  step)
                run.last_loss = logs["loss"]
                run.position += 1
                run.iteration += 1
                run.train_seconds += time.monotonic() - started
                started = time.monotonic()
                for key, value in logs.items():
                    run.totals[key] = run.totals.get(key, 0.0) + value
                progress.update()
                if rank == 0 and (run.iteration % log_every == 0 or run.position == iterations):
                    append_jsonl(metrics_path, {"kind": "iteration", "epoch": run.epoch, "iteration": run.iteration,
                                                "train_seconds": round(run.train_seconds, 3), **logs})
                if run.position == iterations:
                    break
                if checkpoint_or_stop(run, config.checkpoint_every, stop, checkpoint, progress, stop_after_iterations):
                    return None
            progress.close()
            summary = {key: value / max(1, run.position) for key, value in run.totals.items()}
            record = method.epoch_record() if hasattr(method, "epoch_record") else {}  # cluster sizes, NMI
            run.epoch, run.order, run.position = run.epoch + 1, None, 0
            if rank == 0:
                append_jsonl(metrics_path, {"kind": "epoch", "epoch": run.epoch, "iteration": run.iteration,
                                            "train_seconds": round(run.train_seconds, 3), **summary, **record})
                if run.epoch in config.snapshot_epochs:
                    snapshot = run_dir / run_files.SNAPSHOTS / run_files.snapshot_name(run.epoch)
                    torch_save_atomic(backbone_file(method, config, run), snapshot)
            log(f"epoch {run.epoch}/{config.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
            checkpoint()
            if stop["signal"]:
                raise Preempted(f"{stop['signal']} received: checkpoint written after epoch {run.epoch}")
            if stop_after_iterations is not None and run.iteration >= stop_after_iterations:
                return None
        if rank == 0:
            torch_save_atomic(backbone_file(method, config, run), final_path)
    if rank == 0 and not metrics_path.exists():
        write_text_atomic(metrics_path, "")
    distributed.barrier()
    return final_path


def train_step(method, optimizer, batch: torch.Tensor, config: PretrainConfig, run: RunPosition,
               iterations: int, local_size: int, device: torch.device, step: Callable | None = None
               ) -> dict[str, float]:
    """One iteration on this process's slice of the global batch (``batch``, its images from
    :func:`epoch_requests`); returns the logs (loss, lr, method logs). ``step(images, indices)`` runs the forward
    pass (default ``method.training_step``; DDP's wrapper on several processes)."""
    rank = distributed.rank()
    torch.manual_seed(derived_seed(config.seed, run.epoch, run.position, rank, 1))
    start = run.position * config.batch_size
    indices = run.order[start : start + config.batch_size][rank * local_size : (rank + 1) * local_size]
    batch = batch.to(device, non_blocking=True)
    if config.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    factor = learning_rate_factor(run.iteration, iterations, config.schedule.warmup_epochs,
                                  config.schedule.milestones, config.schedule.gamma, config.schedule.warmup_ratio)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    indices = indices.to(device)
    with autocast(config.precision, device):
        loss, logs = (step or method.training_step)(batch, indices)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    check_finite_step(method, process_mean_loss(loss))
    optimizer.step()
    logs = {"loss": float(loss.detach()), **logs, **method.after_step(indices)}
    logs["lr"] = config.optimizer.lr * factor
    return logs


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` to bfloat16 for ``precision == "bf16"``; no context at all for fp32 (the same
    operations, bit for bit, as before the option existed)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
