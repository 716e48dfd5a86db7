"""The online linear probe (track 3 at full scale): images through the frozen trunk every epoch, all heads trained
jointly as in :mod:`.linear_probe`, resumable at any iteration (checkpoints every ``resources.probe_checkpoint_every``
iterations, at each epoch's end and on SIGTERM/SIGUSR1), its per-epoch records written as they come.

A model is a list of trunks: one for a single model, the members' for a concatenation. Every trunk sees the same
augmented batch; per layer their pooled maps are joined along channels (the flattened C-major maps one after the
other, member by member), and the head's per-channel BatchNorm normalises each member's channels with that
member's own layout. The head's BatchNorm is the only normalisation, as for a single model: the members' blocks are
not L2-normalised per image first, as the cached concatenation's (``stages.concat``, made for the SVMs) are."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.images import ImageSource
from ..data.loading import BatchRequest, index_batches, load_batches, sample_seed
from ..core.finite import NonFiniteError
from ..models.pooling import pool_features
from ..evaluation.linear_probe import (FeatureBatch, LinearProbeConfig, build_probe_heads, count_classes, evaluate_top1,
                           labels_tensor, predict_classes, probe_parameter_groups, summarise, training_batch_starts)


class ProbeStopped(RuntimeError):
    """SIGTERM/SIGUSR1 stopped the online probe after its checkpoint was written; rerunning continues it."""


@dataclass(frozen=True)
class ProbeCheckpointing:
    """Where and how often the online probe saves its state (``resources.probe_checkpoint_every`` iterations,
    at the end of every epoch, and when SIGTERM or SIGUSR1 arrives), and its per-epoch records as they come
    (``directory/epochs.jsonl``). ``directory`` None: no checkpoints. ``stop_after_iterations``: tests (a
    simulated kill after a checkpoint)."""

    directory: str | None = None
    every: int = 500
    stop_after_iterations: int | None = None

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"resources.probe_checkpoint_every: expected >= 1 iterations, got {self.every}")


def probe_digest(trunks: Sequence[nn.Module], config: LinearProbeConfig, seed: int, layers: Sequence[str],
                 plans: Sequence[dict], counts: tuple[int, int, int], evaluate_every: int) -> str:
    """What the online probe's result depends on, so that a checkpoint of another run is never restored: the
    trunks' weights (in member order), the probe's config and seed, the layers and poolings, the set sizes and
    classes. One trunk is described as before concatenations were probed online (its checkpoints stay valid)."""
    import hashlib
    import json

    plan = plans[0] if len(plans) == 1 else list(plans)
    digest = hashlib.sha256(json.dumps({"config": dataclasses.asdict(config), "seed": seed, "layers": list(layers),
                                        "plan": plan, "counts": list(counts), "evaluate_every": evaluate_every},
                                       sort_keys=True, default=str).encode())
    for index, trunk in enumerate(trunks):
        prefix = f"member{index}." if index else ""
        for name, tensor in sorted(trunk.state_dict().items()):
            digest.update((prefix + name).encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def joined_layout(plans: Sequence[dict], layers: Sequence[str]) -> tuple[dict[str, int], dict[str, list]]:
    """The heads' input of a list of trunks: ``({layer: summed dim}, {layer: [(channels, dim) per trunk]})``."""
    for index, plan in enumerate(plans):
        missing = [layer for layer in layers if layer not in plan]
        if missing:
            raise KeyError(f"online probe: the pooling plan of trunk {index} has no layer {missing}; it has "
                           f"{sorted(plan)}")
    blocks = {layer: [(plan[layer]["channels"], plan[layer]["dim"]) for plan in plans] for layer in layers}
    return {layer: sum(dim for _, dim in blocks[layer]) for layer in layers}, blocks


def joined_features(trunks: Sequence[nn.Module], plans: Sequence[dict], layers: Sequence[str],
                    batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images ``[B, 3, H, W]`` -> ``{layer: [B, summed dim]}``: each trunk's pooled map of the layer, flattened,
    joined in trunk order (for maps of one size, the maps joined along channels, then flattened)."""
    with torch.no_grad():
        pooled = [pool_features(trunk(batch), plan, layers) for trunk, plan in zip(trunks, plans)]
    if len(pooled) == 1:
        return pooled[0]
    return {layer: torch.cat([member[layer] for member in pooled], dim=1) for layer in layers}


def train_linear_probe_online(
    trunks: Sequence[nn.Module],
    train_source: ImageSource | torch.Tensor,
    val_source: ImageSource | torch.Tensor,
    train_labels,
    val_labels,
    layers: Sequence[str],
    plans: Sequence[dict[str, dict]],
    config: LinearProbeConfig,
    device: torch.device | str,
    seed: int,
    num_classes: int | None = None,
    evaluate_every: int = 1,
    checkpointing: ProbeCheckpointing = ProbeCheckpointing(),
    workers: int = 0,
) -> dict | None:
    """Probe through the frozen ``trunks`` (eval mode, no gradients), pooling each layer of trunk i with
    ``plans[i]``: one trunk for a model, the members' for a concatenation (their features joined per layer).

    Training batches: ``train_source``'s augmented pipeline (``data.probe_images.ProbeImages``), sample slot s
    of epoch e with its own generator of (seed, e, s), in an order drawn from (seed, e) (``data.loading``,
    ``workers`` loader processes), the same batch for every trunk; validation batches without augmentation.
    Each head normalises the channels of its layer's pooled maps (``plans[i][layer]["channels"]``), trunk by
    trunk. A uint8 tensor is accepted as a source too (normalised with the ImageNet statistics, never
    augmented). Resumable (``checkpointing``): a run killed at any iteration and rerun ends with the same heads
    and metrics as an uninterrupted one. Returns the same dict as :func:`train_linear_probe_on_features`, or None
    when ``checkpointing.stop_after_iterations`` stopped it.
    """
    from ..engine.run_control import derived_seed, stop_requests
    from .features import as_image_source

    device = torch.device(device)
    layers, trunks, plans = list(layers), list(trunks), list(plans)
    if not trunks or len(trunks) != len(plans):
        raise ValueError(f"online probe: expected one pooling plan per trunk, got {len(trunks)} trunks and "
                         f"{len(plans)} plans")
    train_source, val_source = as_image_source(train_source), as_image_source(val_source)
    num_train, num_val = len(train_source), len(val_source)
    train_labels = labels_tensor(train_labels, num_train, "train_labels")
    val_labels = labels_tensor(val_labels, num_val, "val_labels")
    num_classes = count_classes(num_classes, train_labels, val_labels)
    generator = torch.Generator().manual_seed(seed)
    dims, blocks = joined_layout(plans, layers)
    heads = build_probe_heads(dims, num_classes, generator, blocks).to(device)
    optimizer, scheduler = probe_optimizer(heads, config)
    digest = probe_digest(trunks, config, seed, layers, plans, (num_train, num_val, num_classes), evaluate_every)
    state = ProbeState(checkpointing, heads, optimizer, scheduler, digest)

    def features_of(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return joined_features(trunks, plans, layers, batch.to(device, non_blocking=True))

    def val_batches() -> Iterator[FeatureBatch]:
        requests = index_batches(num_val, config.batch_size)
        for request, batch in zip(requests, load_batches(val_source, requests, workers, device)):
            yield features_of(batch), val_labels[request.indices].to(device)

    starts = training_batch_starts(num_train, config.batch_size)
    was_training = [trunk.training for trunk in trunks]
    for trunk in trunks:
        trunk.eval()  # frozen: BatchNorm statistics of the trunks must not move either
    try:
        with stop_requests() as stop:
            run = state.restore()
            while run.epoch < config.epochs:
                if run.order is None:
                    order_generator = torch.Generator().manual_seed(derived_seed(seed, run.epoch, 0x0DE2))
                    run.order, run.position, run.totals = torch.randperm(num_train, generator=order_generator), 0, {}
                requests = [BatchRequest(run.order[start:start + config.batch_size], True,
                                         batch_seed=sample_seed(seed, run.epoch, start),  # sources without
                                         slot_seed=(seed, run.epoch, start))  # per-sample draws use the first
                            for start in starts[run.position:]]
                heads.train()
                progress = tqdm(total=len(starts), initial=run.position, desc=f"linear probe epoch {run.epoch + 1}",
                                unit="batch", mininterval=30)
                for request, batch in zip(requests, load_batches(train_source, requests, workers, device)):
                    probe_step(heads, optimizer, features_of(batch), train_labels[request.indices].to(device), run)
                    progress.update()
                    if run.position == len(starts):
                        break
                    if run.iteration % checkpointing.every == 0 or stop["signal"] or state.stop_now(run):
                        state.save(run)
                    if stop["signal"]:
                        raise ProbeStopped(f"{stop['signal']} received: probe checkpoint written at iteration "
                                           f"{run.iteration}; rerun to continue")
                    if state.stop_now(run):
                        return None
                progress.close()
                record = end_of_epoch(heads, scheduler, run, config, evaluate_every, val_batches)
                state.save(run, record)
                if stop["signal"]:
                    raise ProbeStopped(f"{stop['signal']} received: probe checkpoint written after epoch {run.epoch}")
                if state.stop_now(run):
                    return None
        records = state.records()
        result = summarise(records[-1]["val_top1"], records, config, seed, num_classes, num_train, num_val)
        result["val_predictions"] = predict_classes(heads, val_batches(), result["best_layer"])
    finally:
        for trunk, mode in zip(trunks, was_training):
            trunk.train(mode)
    return result


def probe_optimizer(heads: nn.ModuleDict, config: LinearProbeConfig):
    optimizer = torch.optim.SGD(probe_parameter_groups(heads, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=0.1)


def probe_step(heads: nn.ModuleDict, optimizer, features: dict[str, torch.Tensor], labels: torch.Tensor,
               run) -> None:
    """One iteration of all heads; the per-layer loss sums of the epoch accumulate in ``run.totals``."""
    losses = {layer: F.cross_entropy(heads[layer](features[layer]), labels) for layer in heads}
    optimizer.zero_grad(set_to_none=True)
    torch.stack(list(losses.values())).sum().backward()
    optimizer.step()
    for layer, loss in losses.items():
        run.totals[layer] = run.totals.get(layer, 0.0) + loss.item() * len(labels)
    run.totals["seen"] = run.totals.get("seen", 0) + len(labels)
    run.position += 1
    run.iteration += 1


def end_of_epoch(heads, scheduler, run, config: LinearProbeConfig, evaluate_every: int, val_batches) -> dict:
    """The epoch's record (as :func:`fit_probe` writes it); advances ``run`` to the next epoch."""
    seen = max(run.totals.get("seen", 0), 1)
    record = {"epoch": run.epoch + 1, "lr": scheduler.optimizer.param_groups[0]["lr"],
              "train_loss": {layer: run.totals.get(layer, 0.0) / seen for layer in heads}}
    diverged = [layer for layer, loss in record["train_loss"].items() if not math.isfinite(loss)]
    if diverged:  # the features are finite (checked), so the probe's own learning rate is to blame
        raise NonFiniteError(f"linear probe: the training loss of {diverged} is NaN or infinite at epoch "
                             f"{run.epoch + 1}; lower the probe's lr")
    scheduler.step()
    if (run.epoch + 1) % evaluate_every == 0 or run.epoch + 1 == config.epochs:
        record["val_top1"] = evaluate_top1(heads, val_batches())
    run.epoch, run.order, run.position, run.totals = run.epoch + 1, None, 0, {}
    return record


class ProbeState:
    """The online probe's checkpoint (``engine.checkpoint``'s one restore helper: heads, optimiser, position,
    epoch order; the scheduler follows the epoch) and its per-epoch records, in ``checkpointing.directory``."""

    CHECKPOINT, RECORDS = "checkpoint.pth", "epochs.jsonl"

    def __init__(self, checkpointing: ProbeCheckpointing, heads, optimizer, scheduler, digest: str):
        from pathlib import Path

        self.checkpointing, self.heads, self.optimizer, self.scheduler = checkpointing, heads, optimizer, scheduler
        self.digest = digest
        self.directory = Path(checkpointing.directory) if checkpointing.directory else None
        self._records: list[dict] = []

    def restore(self):
        from ..engine.checkpoint import RunPosition, restore_checkpoint
        from ..core.io import read_jsonl

        if self.directory is None or not (self.directory / self.CHECKPOINT).exists():
            if self.directory is not None and (self.directory / self.RECORDS).exists():
                (self.directory / self.RECORDS).unlink()
            return RunPosition()
        run = restore_checkpoint(self.directory / self.CHECKPOINT, self.heads, self.optimizer, self.digest)
        self.scheduler.last_epoch = run.epoch  # the optimiser's restored lr is the one of this epoch
        records = read_jsonl(self.directory / self.RECORDS) if (self.directory / self.RECORDS).exists() else []
        self._records = [record for record in records if record["epoch"] <= run.epoch]
        return run

    def save(self, run, record: dict | None = None) -> None:
        """Record the finished epoch's ``record`` (if any), then write the checkpoint."""
        import json

        from ..engine.checkpoint import save_checkpoint
        from ..core.io import write_text_atomic

        if record is not None:
            self._records.append(record)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if record is not None:  # a few dozen lines: rewritten whole, atomically, before the checkpoint
            write_text_atomic(self.directory / self.RECORDS,
                              "".join(json.dumps(item) + "\n" for item in self._records))
        save_checkpoint(self.directory / self.CHECKPOINT, self.heads, self.optimizer, run, self.digest)

    def stop_now(self, run) -> bool:
        limit = self.checkpointing.stop_after_iterations
        return limit is not None and run.iteration >= limit

    def records(self) -> list[dict]:
        return list(self._records)
