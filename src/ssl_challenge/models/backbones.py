"""Multi-stage backbones: every backbone returns its five stage outputs ``feat1..feat5`` by name.

``feat1`` is the stem (conv + BN + ReLU, before any max-pool: the reference "conv1" layer), ``feat2..feat5`` are
the four residual stages (res2..res5). The evaluation tracks pool these maps (``ssl_challenge.models.pooling``);
pretraining heads use ``pooled(x)``, the global average of the last stage.

Two architectures, chosen by ``build_backbone({"name": ...})``; with ``sobel: true`` either takes its input
through :class:`SobelFilter` first (DeepCluster's published ResNet-50), a fixed layer that is part of the
backbone, so every use of a saved model (features, pseudo-labels, probes) applies it:

- ``resnet50``: torchvision's ResNet-50 (never with downloaded weights). Attribute names follow torchvision
  (conv1, bn1, layer1..layer4), so a torchvision state dict without ``fc.*`` loads strictly. Its convolutions
  start as torchvision's (Kaiming fan_out) or, with ``conv_init: fan_in``, as the reference's (mmcv).
- ``small_resnet``: a CIFAR-style ResNet for the CPU-only embedded profile: a stride-1 3x3 stem and four stages of
  BasicBlocks with strides 1, 2, 2, 2. Fully convolutional, so 32 px pretraining crops and 64 px evaluation
  images go through the same network. Default widths (8, 16, 32, 64): training (forward + backward + SGD, batch
  256, 32 px, 2 threads) measured 1.6-2.4k images/s, against 0.7-1.0k for (16, 32, 64, 128); the convolutions
  are 75% of the time, so only narrower stages buy speed on 2 cores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import ConfigError, from_dict
from ..core.finite import non_finite_tensors
from ..core.io import ModelFileError, load_torch_file

LAYER_NAMES = ("feat1", "feat2", "feat3", "feat4", "feat5")


class MultiStageBackbone(nn.Module):
    """The common interface: a stem and four stages, run in order.

    Subclasses register their modules under their own names, call :meth:`_set_channels`, and return the five
    steps in order from :meth:`stage_functions`; the named outputs and the pooled feature live here once.
    """

    layer_names: tuple[str, ...] = LAYER_NAMES
    # oneDNN convolutions on CPU run 1.3-1.4x faster (forward and backward, measured on the embedded network) on
    # channels-last (NHWC) inputs; values and shapes are unchanged. Other devices are left to the caller.
    cpu_channels_last: bool = False

    def _set_channels(self, channels: list[int]) -> None:
        if len(channels) != len(LAYER_NAMES):
            raise ValueError(f"{type(self).__name__}: expected {len(LAYER_NAMES)} channel counts, got {channels}")
        self.layer_channels: dict[str, int] = dict(zip(LAYER_NAMES, channels))
        self.out_dim: int = channels[-1]
        self.cpu_channels_last = _channels_last_is_safe(channels)

    def _prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        sobel = getattr(self, "sobel", None)
        if sobel is not None:
            images = sobel(images)
        # Only while oneDNN is on (not in deterministic mode, see ssl_challenge.core.numerics): without it
        # channels-last buys nothing, and ATen's channels-last BatchNorm splits its statistics over threads.
        if (self.cpu_channels_last and images.device.type == "cpu" and images.dim() == 4
                and torch.backends.mkldnn.enabled):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def stage_functions(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
        """The stem and the four stages, in the order they run (feat1..feat5)."""
        raise NotImplementedError(f"{type(self).__name__} must define stage_functions()")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images ``[B, 3, H, W]`` -> ``{"feat1": [B, C1, H1, W1], ..., "feat5": [B, C5, H5, W5]}``."""
        outputs = {}
        x = self._prepare_input(images)
        for name, stage in zip(LAYER_NAMES, self.stage_functions()):
            x = stage(x)
            outputs[name] = x
        return outputs

    def last_stage(self, images: torch.Tensor) -> torch.Tensor:
        """The ``feat5`` map alone ``[B, out_dim, h, w]`` (no intermediate outputs kept alive)."""
        x = self._prepare_input(images)
        for stage in self.stage_functions():
            x = stage(x)
        return x

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Global average pool of the last stage: ``[B, 3, H, W]`` -> ``[B, out_dim]`` (the input of heads)."""
        return self.last_stage(images).mean(dim=(2, 3))


class SobelFilter(nn.Module):
    """The fixed input layer of DeepCluster's Sobel models: ``[B, 3, H, W]`` -> ``[B, 2, H, W]``.

    Grayscale as the channel mean (a 1x1 convolution with weights 1/3, as the reference), then two 3x3
    cross-correlations with zero padding 1: the horizontal gradient ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and
    its transpose, the vertical one. No trainable parameters; the kernels are non-persistent buffers (constants,
    rebuilt from the backbone config, so they are never in a state dict).
    """

    def __init__(self):
        super().__init__()
        horizontal = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("kernels", torch.stack([horizontal, horizontal.t()]).unsqueeze(1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"SobelFilter: expected [B, 3, H, W] images, got {tuple(images.shape)}")
        gray = images.mean(dim=1, keepdim=True)
        return F.conv2d(gray, self.kernels.to(gray.dtype), padding=1)


def input_channels(sobel: bool) -> int:
    return 2 if sobel else 3


def _channels_last_is_safe(channels: list[int]) -> bool:
    """Whether CPU channels-last may be used. In torch 2.14.1 (oneDNN) the backward of a strided 1x1 convolution
    on a channels-last input with 2-7 input channels corrupts the heap ("double free or corruption"); stage widths
    that are all multiples of 8 ran clean in repeated trials, so only those get channels-last."""
    return all(count % 8 == 0 for count in channels)


# ------------------------------------------------------------------------------------------------ ResNet-50
# Kaiming-normal initialisation of every convolution (gain sqrt(2), for ReLU), its variance 2 / fan: torchvision's
# fan_out (output channels x kernel area), or fan_in (input channels x kernel area) as the reference's ResNet-50
# (mmcv's kaiming_init). BatchNorm starts at weight 1, bias 0 under both. A ResNet-50 option only: the embedded
# small_resnet keeps torchvision's (its config, and so its jobs' params and model files, stay as they were).
CONV_INITS = ("fan_out", "fan_in")


@dataclass(frozen=True)
class ResNet50Options:
    zero_init_residual: bool = False
    sobel: bool = False
    conv_init: str = "fan_out"

    def __post_init__(self):
        if self.conv_init not in CONV_INITS:
            raise ConfigError(f"backbone.conv_init: expected one of {list(CONV_INITS)}, got {self.conv_init!r}")


class ResNet50Backbone(MultiStageBackbone):
    """torchvision ResNet-50 without avgpool/fc; feat1 is taken before the max-pool, as in the reference."""

    def __init__(self, options: ResNet50Options = ResNet50Options()):
        super().__init__()
        from torchvision.models import resnet50 as torchvision_resnet50  # here: importing torchvision takes ~1 s

        network = torchvision_resnet50(weights=None, zero_init_residual=options.zero_init_residual)
        # torchvision's attribute names, so that its state dicts (minus fc.*) load strictly.
        if options.sobel:  # the stem takes the two Sobel channels (initialised as torchvision does its conv1)
            network.conv1 = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(network.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.sobel = SobelFilter() if options.sobel else None
        self.conv1, self.bn1, self.relu = network.conv1, network.bn1, network.relu
        self.maxpool = network.maxpool
        self.layer1, self.layer2 = network.layer1, network.layer2
        self.layer3, self.layer4 = network.layer3, network.layer4
        self._set_channels([64, 256, 512, 1024, 2048])
        if options.conv_init == "fan_in":  # drawn again over torchvision's fan_out weights (BatchNorm as it is)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(images)))

    def _res2(self, stem_output: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.maxpool(stem_output))

    def stage_functions(self):
        return (self._stem, self._res2, self.layer2, self.layer3, self.layer4)


# ------------------------------------------------------------------------------------------------ small ResNet
class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (two 3x3 convolutions, the first with the stride, and the shortcut), with its
    attribute names, creation order and operations, so that its parameters, state dict and outputs are the same.
    Written here because importing torchvision (and with it torch._dynamo) took about 1 s of every job that builds
    an embedded network, where ResNet-50 and the detector are the only users of torchvision."""

    def __init__(self, in_width: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


@dataclass(frozen=True)
class SmallResNetOptions:
    widths: tuple[int, ...] = (8, 16, 32, 64)  # the fastest reasonable on 2 CPU cores
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    zero_init_residual: bool = False
    sobel: bool = False


class SmallResNetBackbone(MultiStageBackbone):
    """CIFAR-style ResNet: 3x3 stride-1 stem (feat1), four BasicBlock stages with strides 1, 2, 2, 2 (feat2..5).

    At 32 px the stage maps are 32, 32, 16, 8, 4 px; at 64 px twice that.
    """

    STRIDES = (1, 2, 2, 2)

    def __init__(self, options: SmallResNetOptions = SmallResNetOptions()):
        super().__init__()
        _check_stage_counts(options)
        stem_width = options.widths[0]
        stem = nn.Sequential(
            nn.Conv2d(input_channels(options.sobel), stem_width, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        stages, in_width = [], stem_width
        for width, num_blocks, stride in zip(options.widths, options.blocks, self.STRIDES):
            stages.append(_basic_stage(in_width, width, num_blocks, stride))
            in_width = width
        self.sobel = SobelFilter() if options.sobel else None
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self._set_channels([stem_width, *options.widths])
        _initialise_like_torchvision(self, options.zero_init_residual)

    def stage_functions(self):
        return (self.stem, *self.stages)


def _check_stage_counts(options: SmallResNetOptions) -> None:
    for key in ("widths", "blocks"):
        values = getattr(options, key)
        if len(values) != 4 or any(value < 1 for value in values):
            raise ConfigError(f"backbone.{key}: expected 4 positive integers (one per stage), got {list(values)}")


def _basic_stage(in_width: int, width: int, num_blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_width != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_width, width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(width)
        )
    blocks = [BasicBlock(in_width, width, stride=stride, downsample=downsample)]
    blocks += [BasicBlock(width, width) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _initialise_like_torchvision(network: nn.Module, zero_init_residual: bool) -> None:
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:  # each block starts as the identity, which helps early training (Goyal et al. 2017)
        for module in network.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


# ------------------------------------------------------------------------------------------------ builder
BACKBONES = {
    "small_resnet": (SmallResNetBackbone, SmallResNetOptions),
    "resnet50": (ResNet50Backbone, ResNet50Options),
}


def build_backbone(config: dict) -> MultiStageBackbone:
    """``{"name": "small_resnet" | "resnet50", **options}`` -> a backbone; unknown names or keys raise.

    The resolved configuration (defaults filled in, JSON-able) is kept as ``backbone.config``, so a checkpoint
    that stores it rebuilds the same network even if a default changes later.
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ConfigError(f"backbone.name: missing; expected one of {sorted(BACKBONES)} in {config!r}")
    name = config["name"]
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    backbone_class, options_class = BACKBONES[name]
    options = from_dict(options_class, {k: v for k, v in config.items() if k != "name"}, where="backbone")
    backbone = backbone_class(options)
    backbone.config = {"name": name, **_json_able(dataclasses.asdict(options))}
    return backbone


MODEL_FILE = ("a model file written by the training loop: a dict of tensors and plain values with "
              "'backbone' (a state dict) and 'backbone_config'")
MODEL_FILE_REMEDY = "Delete it and rerun the job that writes it (snakemake recreates a missing model file)."
MODEL_FILE_WRITER = ("the training loop (engine.train.backbone_file; rules pretrain and codc_round, and "
                     "snapshot_model for a model@e<epoch>)")


def read_model_file(model_path) -> dict:
    """The content of a ``model.pth`` (``engine.train.backbone_file``): the one reader of the format.

    Loaded with ``weights_only=True`` (a file holding anything but tensors and plain values is refused before any
    of it runs); raises :class:`ModelFileError` naming the file when it lacks the entries or holds NaN/inf weights
    (the training that wrote it diverged), :class:`CorruptFileError` naming it and its writer when it is truncated
    or damaged.
    """
    saved = load_torch_file(model_path, MODEL_FILE, MODEL_FILE_REMEDY, MODEL_FILE_WRITER)
    if not isinstance(saved, dict) or "backbone" not in saved or "backbone_config" not in saved:
        found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ModelFileError(f"{model_path}: not a model file (found {found}); expected {MODEL_FILE}")
    diverged = non_finite_tensors(saved["backbone"])
    if diverged:
        raise ModelFileError(f"{model_path}: {len(diverged)} backbone tensors hold NaN or infinite values (first: "
                             f"{diverged[:3]}); the training that wrote it diverged. Delete it and retrain with a "
                             "smaller learning rate")
    return saved


def load_backbone(model_path, device: torch.device) -> tuple[MultiStageBackbone, dict]:
    """The backbone of a ``model.pth`` written by the training loop, on ``device`` (strict load), and its
    config. The backbone is in eval mode (features, labels and probes use it frozen)."""
    saved = read_model_file(model_path)
    backbone = build_backbone(saved["backbone_config"])
    backbone.load_state_dict(saved["backbone"], strict=True)
    return backbone.to(device).eval(), saved["backbone_config"]


def _json_able(options: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in options.items()}
