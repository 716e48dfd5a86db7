"""The generic pretraining loop: any method of ``ssl_challenge.methods`` over any image source.

Resumable by construction: a checkpoint (see ``checkpoint.py``) is written every ``checkpoint_every`` iterations,
at the end of every epoch, and when SIGTERM or SIGUSR1 arrives (SLURM's warning before a time limit or a
preemption); the job then exits with :class:`.run_control.Preempted` so that the scheduler's retry continues the
run. Every random draw is derived from (seed, epoch, iteration, rank), so an interrupted and resumed run ends with
weights identical to an uninterrupted one, on several processes too: there BatchNorm's running statistics (not
synchronised by DDP, and per rank without ``sync_bn``) are set to rank 0's on every rank before each feature pass
and each checkpoint (:func:`.distributed.broadcast_batchnorm_buffers_`), so the checkpoint holds what every rank
continues from, and a rank's own statistics between two such points are read by nothing.

The loop receives a built method (``pretraining.build_pretraining_method``; the engine never imports the
methods). On several processes (torchrun) it wraps the method in ``DistributedDataParallel`` (gradients averaged
per bucket during the backward pass), with synchronised BatchNorm where the model asks for it (``sync_bn``); on
one process the method runs unwrapped, exactly as before. ``precision: bf16`` runs the forward pass under
``torch.autocast``; ``channels_last`` stores images and convolution weights in NHWC order (GPU tensor cores).
:func:`.settings.check_run_settings` refuses, before anything trains, a batch the processes cannot share or a
precision the device lacks.

A run reads in three parts: :func:`start_run` (the method on its device, its optimiser, the position resumed
from the checkpoint), :func:`train_epoch` (the method's epoch hooks, then :func:`train_step` per batch) and
:func:`end_epoch` (metrics line, snapshot, checkpoint); :class:`RunState` is what they share. The images come
through the ``data.images.PretrainingImages`` interface, never a concrete source class.

A run that diverges stops at once: a NaN or infinite loss or gradient raises
:class:`.run_control.TrainingDiverged` before the optimiser applies it, naming the model, epoch, iteration and
last finite loss; no model file is written, and a checkpoint is never written from a state holding NaN or
infinity.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..core import run_files
from ..core.finite import non_finite_tensors
from ..core.io import append_jsonl, config_digest, torch_save_atomic, write_text_atomic
from ..core.numerics import numerics_record
from ..data.images import PretrainingImages
from ..data.loading import BatchRequest, check_workers, load_batches
from . import distributed
from .checkpoint import RunPosition, restore_checkpoint, save_checkpoint
from .run_control import (NonFiniteValues, Preempted, checkpoint_or_stop, derived_seed, divergence_reported,
                          stop_requests, truncate_metrics)
from .context import EpochContext
from .inference import frozen_outputs
from .schedule import learning_rate_factor
from .settings import OptimizerConfig, PretrainConfig, check_run_settings
from .sync_batchnorm import convert_sync_batchnorm


def seed_initialisation(seed: int) -> None:
    """Seed torch's global RNG for building a method (its heads' and backbone's initial weights): call it right
    before ``methods.build_method`` so that every process, and every rerun, starts from the same weights."""
    torch.manual_seed(derived_seed(seed, 0xB1D))


def build_optimizer(method: torch.nn.Module, config: OptimizerConfig) -> torch.optim.SGD:
    base = asdict(config)
    groups = method.parameter_groups(base)
    for group in groups:
        group.setdefault("lr", config.lr)
        group["base_lr"] = group["lr"]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def feature_extractor(images: PretrainingImages, num_samples: int, batch_size: int, device: torch.device,
                      method: torch.nn.Module, workers: int = 0):
    """``EpochContext.extract_features``: ``fn`` over the whole set in index order, eval mode, no grad
    (``inference.run_frozen``); on several processes each rank extracts its shard with rank 0's BatchNorm
    statistics (broadcast first) and the shards are gathered (all ranks get Tensor[N, D], as rank 0's network
    alone would give)."""

    def extract(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        world, rank = distributed.world_size(), distributed.rank()
        shard = math.ceil(num_samples / world)
        indices = torch.arange(rank * shard, (rank + 1) * shard).clamp_(max=num_samples - 1)
        distributed.broadcast_batchnorm_buffers_(method)
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
    """The method's step wrapped in DDP (several processes). Buffers are not broadcast each step: the methods
    keep theirs (pseudo-labels, ODC's memory) equal on every rank themselves; BatchNorm's running statistics
    drift apart without ``sync_bn`` (each rank's follow its own batches) and are read only in eval mode, so the
    loop sets them to rank 0's before each feature pass and each checkpoint (:func:`feature_extractor`,
    :func:`write_checkpoint`). The checkpoint and the model file are rank 0's."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(TrainingStep(method), device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def epoch_requests(images: PretrainingImages, config: PretrainConfig, run: RunPosition, iterations: int,
                   local_size: int) -> list[BatchRequest]:
    """This process's batches of the rest of the epoch (from ``run.position``), so that N processes see exactly
    the images one process sees. A source that seeds each sample (``images.per_sample_seeds``: decoded from
    files): this rank's slice only, each sample with its own generator of (seed, epoch, slot)
    (``data.loading.sample_seed``). Otherwise (images in memory): the whole global batch drawn from one generator
    of (seed, epoch, position), this rank's slice kept."""
    rank, requests = distributed.rank(), []
    for position in range(run.position, iterations):
        start = position * config.batch_size
        global_indices = run.order[start : start + config.batch_size]
        mine = (rank * local_size, (rank + 1) * local_size)
        if images.per_sample_seeds:
            requests.append(BatchRequest(global_indices[mine[0] : mine[1]], True,
                                         slot_seed=(config.seed, run.epoch, start + mine[0])))
        else:
            requests.append(BatchRequest(global_indices, True, derived_seed(config.seed, run.epoch, position, 2),
                                         keep=mine))
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


def refuse_non_finite(state: dict, what: str) -> None:
    """Raise :class:`NonFiniteValues` naming the first tensors of ``state`` (a state dict) that hold NaN or
    infinity: a diverged state is never written to a model file or a checkpoint."""
    diverged = non_finite_tensors(state)
    if diverged:
        raise NonFiniteValues(f"{what} {diverged[:3]} hold NaN or infinity")


def backbone_file(method: torch.nn.Module, config: PretrainConfig, run: RunPosition) -> dict:
    """The content of a model file (``models.backbones.read_model_file`` reads it). A backbone holding NaN or
    infinity is never written."""
    backbone = method.backbone
    refuse_non_finite(backbone.state_dict(), "backbone tensors")
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


@dataclass
class RunState:
    """What the parts of one run share: its settings, the method placed on its device with its optimiser and
    step, the run folder, and ``run``, the position a checkpoint saves."""

    config: PretrainConfig
    method: torch.nn.Module
    images: PretrainingImages
    device: torch.device
    run_dir: Path
    optimizer: torch.optim.Optimizer
    step: Callable  # forward pass of one batch: method.training_step, or its DDP wrapper on several processes
    extract: Callable  # EpochContext.extract_features
    digest: str  # the configuration a checkpoint belongs to
    run: RunPosition
    log: Callable[[str], None]
    log_every: int
    data_workers: int
    clock: float = 0.0  # time.monotonic() from which the training time of the current iteration counts

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / run_files.METRICS


def pretrain(config: PretrainConfig, method: torch.nn.Module, images: PretrainingImages, run_dir: str | Path,
             device: torch.device, *, log: Callable[[str], None] = print, stop_after_iterations: int | None = None,
             log_every: int = 20, name: str | None = None, data_workers: int = 0) -> Path | None:
    """Train (or resume) ``method`` (built for ``config`` and ``images``, e.g. by
    ``pretraining.build_pretraining_method``) in ``run_dir``; returns ``run_dir/model.pth`` (the backbone), or
    None when ``stop_after_iterations`` (tests: a simulated kill after a checkpoint) stopped it early. ``name``
    (the config key, e.g. ``models.rot``; default: ``run_dir``) names the model in errors. ``data_workers``:
    processes that make the batches ahead (``resources.data_workers``; 0: this process, when needed)."""
    check_run_settings(config, device, distributed.world_size(), method)
    check_workers(data_workers)
    run_dir = Path(run_dir)
    final_path = run_dir / run_files.MODEL
    if final_path.exists():
        log(f"{final_path} exists: nothing to do")
        return final_path
    state = start_run(config, method, images, run_dir, device, log, log_every, data_workers)
    with stop_requests() as stop, divergence_reported(name or str(run_dir), state.run):
        while state.run.epoch < config.epochs:
            if not train_epoch(state, stop, stop_after_iterations):
                return None  # stop_after_iterations (tests) ended the run inside the epoch
            if end_epoch(state, stop, stop_after_iterations):
                return None
        if distributed.rank() == 0:
            torch_save_atomic(backbone_file(state.method, config, state.run), final_path)
    if distributed.rank() == 0 and not state.metrics_path.exists():
        write_text_atomic(state.metrics_path, "")
    distributed.barrier()
    return final_path


def start_run(config: PretrainConfig, method: torch.nn.Module, images: PretrainingImages, run_dir: Path,
              device: torch.device, log: Callable[[str], None], log_every: int, data_workers: int) -> RunState:
    """Setup and resume: the method on ``device`` (synchronised BatchNorm over several processes when
    ``sync_bn``, channels-last when asked), its optimiser and step, and the run's position, restored from the
    checkpoint in ``run_dir`` when there is one (:func:`resumed_position`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.world_size()
    digest = config_digest({"config": asdict(config), "num_samples": len(images)})
    method = method.to(device)
    if world > 1 and config.sync_bn:
        method = convert_sync_batchnorm(method, device)
    if config.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, config.optimizer)
    run = resumed_position(run_dir, method, optimizer, digest, log)
    step = distributed_step(method, device) if world > 1 else method.training_step
    extract = feature_extractor(images, len(images), 2 * config.batch_size, device, method, data_workers)
    return RunState(config, method, images, device, run_dir, optimizer, step, extract, digest, run, log, log_every,
                    data_workers)


def resumed_position(run_dir: Path, method: torch.nn.Module, optimizer, digest: str,
                     log: Callable[[str], None]) -> RunPosition:
    """The position restored, with the method's and optimiser's states, from the run's checkpoint (the metric
    lines written after it dropped: they will be written again), or the start of a run (old metrics removed)."""
    checkpoint_path, metrics_path = run_dir / run_files.CHECKPOINT, run_dir / run_files.METRICS
    if checkpoint_path.exists():
        run = restore_checkpoint(checkpoint_path, method, optimizer, digest)
        log(f"resumed from {checkpoint_path}: epoch {run.epoch}, batch {run.position}, iteration {run.iteration}")
        if distributed.rank() == 0:
            truncate_metrics(metrics_path, run.iteration)
        return run
    if distributed.rank() == 0 and metrics_path.exists():
        metrics_path.unlink()
    return RunPosition()


def write_checkpoint(state: RunState) -> None:
    """The run's checkpoint (rank 0 writes it; every rank waits), never of a diverged state. Every rank takes
    rank 0's BatchNorm statistics first, so that it continues from what the checkpoint holds, as a resumed run
    does."""
    distributed.broadcast_batchnorm_buffers_(state.method)
    refuse_non_finite(state.method.state_dict(), "the method's state tensors")
    if distributed.rank() == 0:
        save_checkpoint(state.run_dir / run_files.CHECKPOINT, state.method, state.optimizer, state.run, state.digest)
    distributed.barrier()


def train_epoch(state: RunState, stop: dict, stop_after_iterations: int | None) -> bool:
    """One epoch, or its rest after a resume: at its start the method's ``before_epoch`` and sample order, then a
    :func:`train_step` per batch, with metrics lines and checkpoints. False when ``stop_after_iterations`` ended
    the run inside it."""
    config, method, run = state.config, state.method, state.run
    state.clock = time.monotonic()
    if run.order is None:
        context = EpochContext(run.epoch, len(state.images), state.device,
                               torch.Generator().manual_seed(derived_seed(config.seed, run.epoch)), state.extract)
        method.train()
        method.before_epoch(context)
        run.order, run.position, run.totals = method.epoch_indices(context).cpu(), 0, {}
    iterations = max(1, len(run.order) // config.batch_size)
    local_size = config.batch_size // distributed.world_size()
    method.train()
    progress = tqdm(total=iterations, initial=run.position, desc=f"{config.method} epoch {run.epoch + 1}",
                    disable=distributed.rank() != 0, mininterval=10, dynamic_ncols=True)
    batches = load_batches(state.images, epoch_requests(state.images, config, run, iterations, local_size),
                           state.data_workers, state.device)
    while run.position < iterations:
        logs = train_step(method, state.optimizer, next(batches), config, run, iterations, local_size, state.device,
                          state.step)
        count_iteration(state, logs, iterations)
        progress.update()
        if run.position == iterations:
            break
        if checkpoint_or_stop(run, config.checkpoint_every, stop, lambda: write_checkpoint(state), progress,
                              stop_after_iterations):
            return False
    progress.close()
    return True


def count_iteration(state: RunState, logs: dict[str, float], iterations: int) -> None:
    """Move the position one batch on, add the iteration's time and logs to the epoch's, and write its metrics
    line every ``log_every`` iterations and at the epoch's last."""
    run, now = state.run, time.monotonic()
    run.last_loss = logs["loss"]
    run.position += 1
    run.iteration += 1
    run.train_seconds += now - state.clock
    state.clock = now
    for key, value in logs.items():
        run.totals[key] = run.totals.get(key, 0.0) + value
    if distributed.rank() == 0 and (run.iteration % state.log_every == 0 or run.position == iterations):
        append_jsonl(state.metrics_path, {"kind": "iteration", "epoch": run.epoch, "iteration": run.iteration,
                                          "train_seconds": round(run.train_seconds, 3), **logs})


def end_epoch(state: RunState, stop: dict, stop_after_iterations: int | None) -> bool:
    """After an epoch's last batch: its metrics line (mean logs and the method's ``epoch_record``), a snapshot
    of the backbone when ``snapshot_epochs`` asks, and the checkpoint; raise :class:`Preempted` when a signal came.
    True when ``stop_after_iterations`` ends the run here."""
    config, run = state.config, state.run
    summary = {key: value / max(1, run.position) for key, value in run.totals.items()}
    record = state.method.epoch_record()  # cluster sizes, NMI
    run.epoch, run.order, run.position = run.epoch + 1, None, 0
    if distributed.rank() == 0:
        append_jsonl(state.metrics_path, {"kind": "epoch", "epoch": run.epoch, "iteration": run.iteration,
                                          "train_seconds": round(run.train_seconds, 3), **summary, **record})
        if run.epoch in config.snapshot_epochs:
            snapshot = state.run_dir / run_files.SNAPSHOTS / run_files.snapshot_name(run.epoch)
            torch_save_atomic(backbone_file(state.method, config, run), snapshot)
    state.log(f"epoch {run.epoch}/{config.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    write_checkpoint(state)
    if stop["signal"]:
        raise Preempted(f"{stop['signal']} received: checkpoint written after epoch {run.epoch}")
    return stop_after_iterations is not None and run.iteration >= stop_after_iterations


def train_step(method, optimizer, batch: torch.Tensor, config: PretrainConfig, run: RunPosition,
               iterations: int, local_size: int, device: torch.device, step: Callable) -> dict[str, float]:
    """One iteration on this process's slice of the global batch (``batch``, its images from
    :func:`epoch_requests`); returns the logs (loss, lr, method logs). ``step(images, indices)`` runs the forward
    pass: ``method.training_step``, or DDP's wrapper of it on several processes (:func:`distributed_step`)."""
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
        loss, logs = step(batch, indices)
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
