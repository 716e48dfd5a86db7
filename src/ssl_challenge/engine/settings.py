"""What one model's pretraining is configured with: the ``models.<name>`` config entry as frozen dataclasses (built
once per job from the rule's dict by ``core.config.from_dict``, by the stage that runs the loop), and the settings
a run refuses before anything trains (:func:`check_run_settings`): a snapshot after an epoch that does not run, a
batch the processes cannot share, a precision the device lacks."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.config import ConfigError
from ..core.numerics import deterministic_requested
from ..data.transforms import AugmentationConfig
from .sync_batchnorm import has_batchnorm


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
    # The image pipeline: built into the image source by the caller (stages.pretraining.run_pretraining); kept here
    # so that a run's digest covers it.
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
    snapshot after an epoch that does not run, a batch the ``world`` processes cannot share, fewer than 2 samples
    per process for BatchNorm (``method``: any BatchNorm layer; unless ``sync_bn``), bf16 on a device without it,
    channels-last in deterministic CPU mode. Called before any image is loaded or any step runs."""
    late = [epoch for epoch in config.snapshot_epochs if not 0 < epoch <= config.epochs]
    if late:  # found now, not as a missing snapshot file after the training
        raise ConfigError(f"snapshot_epochs: {late} outside 1..{config.epochs} (epochs); a snapshot is taken after "
                          "an epoch that runs")
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
