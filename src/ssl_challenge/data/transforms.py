"""The pretraining image pipeline of a model (``models.<name>.augmentation``) as batched tensor operations.

The reference DC and ODC recipes (OpenSelfSup deepcluster/r50.py, odc/r50_v1.py) apply, in this order:
RandomResizedCrop, horizontal flip, RandomRotation(2), ColorJitter(0.4, 0.4, 1.0, 0.5), RandomGrayscale(0.2), then
the ImageNet normalisation. The crop and flip live in the image sources (``data.images``); this module holds the
configuration, the per-sample random draws, and the steps after the crop (rotation, colour jitter, grayscale),
each applied to a whole batch with one parameter per sample, so that preloaded tensors (any device) and images
decoded from files share one implementation.

Every step draws a fixed number of numbers per sample from the CPU generator it is given (whether or not the
step fires for that sample), so a resumed run that restores the generator sees the same images. The colour maths
follows torchvision's tensor kernels (``torchvision.transforms.v2.functional``: grayscale weights 0.2989, 0.587,
0.114; contrast blends with the mean grayscale value; hue shifts in HSV space), which take one factor per call;
``tests/unit/test_transforms.py`` checks every step against them image by image.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.config import ConfigError

CROPS = ("auto", "padded", "random_resized")
RATIO_RANGE = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios
GRAYSCALE_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale on tensors
EXTRA_DRAWS = 10  # per sample: rotation angle, four jitter factors, four jitter order keys, grayscale coin


@dataclass(frozen=True)
class ColorJitterConfig:
    """torchvision's ColorJitter: factors uniform in [max(0, 1 - b), 1 + b] (hue: shift uniform in [-h, h])."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augmentation.color_jitter.{name}: expected >= 0, got {getattr(self, name)}")
        if self.hue > 0.5:
            raise ConfigError(f"augmentation.color_jitter.hue: expected <= 0.5, got {self.hue}")

    @property
    def enabled(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))


@dataclass(frozen=True)
class AugmentationConfig:
    """One model's pretraining pipeline (``models.<name>.augmentation``); the defaults are the image source's
    crop and flip alone, today's behaviour for configs that do not set the key."""

    crop: str = "auto"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    rotation_degrees: float = 0.0
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    grayscale_probability: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "crop_scale", tuple(float(value) for value in self.crop_scale))
        if self.crop not in CROPS:
            raise ConfigError(f"augmentation.crop: expected one of {list(CROPS)}, got {self.crop!r}")
        low, high = self.crop_scale if len(self.crop_scale) == 2 else (0.0, 0.0)
        if len(self.crop_scale) != 2 or not 0 < low <= high <= 1:
            raise ConfigError(f"augmentation.crop_scale: expected [min, max] with 0 < min <= max <= 1, "
                              f"got {list(self.crop_scale)}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ConfigError(f"augmentation.rotation_degrees: expected 0..180, got {self.rotation_degrees}")
        if not 0 <= self.grayscale_probability <= 1:
            raise ConfigError(f"augmentation.grayscale_probability: expected 0..1, got {self.grayscale_probability}")

    def resolved_crop(self, preloaded: bool) -> str:
        """``auto`` is the source's own crop: padded for preloaded images, random_resized from files."""
        if self.crop != "auto":
            return self.crop
        return "padded" if preloaded else "random_resized"

    @property
    def has_steps_after_crop(self) -> bool:
        return self.rotation_degrees > 0 or self.color_jitter.enabled or self.grayscale_probability > 0


# ------------------------------------------------------------------------------------------------ draws
def draw_resized_crop_parameters(batch_size: int, scale: tuple[float, float], generator: torch.Generator,
                                 ratio: tuple[float, float] = RATIO_RANGE) -> torch.Tensor:
    """float64 [B, 5]: area fraction, log aspect ratio, horizontal and vertical position in [0, 1), flip coin."""
    uniform = torch.rand(batch_size, 5, generator=generator, dtype=torch.float64)
    low_ratio, high_ratio = math.log(ratio[0]), math.log(ratio[1])
    uniform[:, 0] = scale[0] + (scale[1] - scale[0]) * uniform[:, 0]
    uniform[:, 1] = low_ratio + (high_ratio - low_ratio) * uniform[:, 1]
    return uniform


def resized_crop_box(width: int, height: int, draw) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height) of one RandomResizedCrop draw (the first four numbers of a row of
    :func:`draw_resized_crop_parameters`). A crop that does not fit is clamped to the image instead of
    torchvision's ten rejection tries, to keep a fixed number of draws per sample (the preloaded source's
    batched crop; images decoded from files get torchvision's own, ``data.file_images.FileImages``)."""
    area_fraction, log_ratio, x_position, y_position = (float(value) for value in draw[:4])
    area = area_fraction * width * height
    crop_width = min(width, max(1, round(math.sqrt(area * math.exp(log_ratio)))))
    crop_height = min(height, max(1, round(math.sqrt(area / math.exp(log_ratio)))))
    left = min(width - crop_width, int(x_position * (width - crop_width + 1)))
    top = min(height - crop_height, int(y_position * (height - crop_height + 1)))
    return left, top, crop_width, crop_height


@dataclass(frozen=True)
class StepDraws:
    """Per-sample parameters of the steps after the crop (each [B]; ``jitter_order`` [B, 4])."""

    angles: torch.Tensor  # degrees
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    jitter_order: torch.Tensor  # per sample a permutation of 0..3 (brightness, contrast, saturation, hue)
    grayscale: torch.Tensor  # bool


def draw_step_parameters(config: AugmentationConfig, batch_size: int, generator: torch.Generator) -> StepDraws:
    """:data:`EXTRA_DRAWS` uniforms per sample, mapped to the ranges of ``config`` (whatever is enabled)."""
    uniform = torch.rand(batch_size, EXTRA_DRAWS, generator=generator, dtype=torch.float64)
    jitter = config.color_jitter

    def factor(column: int, amount: float) -> torch.Tensor:
        low = max(0.0, 1.0 - amount)
        return low + (1.0 + amount - low) * uniform[:, column]

    degrees = config.rotation_degrees
    return StepDraws(
        angles=-degrees + 2 * degrees * uniform[:, 0],
        brightness=factor(1, jitter.brightness),
        contrast=factor(2, jitter.contrast),
        saturation=factor(3, jitter.saturation),
        hue=-jitter.hue + 2 * jitter.hue * uniform[:, 4],
        jitter_order=uniform[:, 5:9].argsort(dim=1),
        grayscale=uniform[:, 9] < config.grayscale_probability,
    )


def concat_step_draws(draws: list[StepDraws]) -> StepDraws:
    """The draws of several batches (e.g. one per sample) as one batch's, in order."""
    return StepDraws(*(torch.cat([getattr(part, name.name) for part in draws])
                       for name in dataclasses.fields(StepDraws)))


# ------------------------------------------------------------------------------------------------ steps
def apply_steps_after_crop(images: torch.Tensor, config: AugmentationConfig, draws: StepDraws) -> torch.Tensor:
    """Rotation, colour jitter (per-sample order), grayscale on float images [B, 3, S, S] in [0, 1]."""
    if config.rotation_degrees > 0:
        images = rotate_batch(images, draws.angles)
    if config.color_jitter.enabled:
        images = color_jitter_batch(images, config.color_jitter, draws)
    if config.grayscale_probability > 0:
        gray = grayscale(images).expand_as(images)
        images = torch.where(draws.grayscale.to(images.device)[:, None, None, None], gray, images)
    return images


def rotate_batch(images: torch.Tensor, angles_degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle (counter-clockwise, as torchvision's ``rotate``),
    nearest-neighbour, corners filled with 0, size kept. images [B, C, H, W] float, angles [B]."""
    batch_size, _, height, width = images.shape
    radians = torch.deg2rad(angles_degrees.to(torch.float32))
    cos, sin = torch.cos(radians), torch.sin(radians)
    # Output pixel centres in pixel units about the image centre, mapped back into the input by the inverse
    # rotation; then into grid_sample's [-1, 1] coordinates (align_corners=False).
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    source_x = cos[:, None, None] * grid_x - sin[:, None, None] * grid_y
    source_y = sin[:, None, None] * grid_x + cos[:, None, None] * grid_y
    grid = torch.stack([(source_x + (width - 1) / 2 + 0.5) * 2 / width - 1,
                        (source_y + (height - 1) / 2 + 0.5) * 2 / height - 1], dim=-1)
    grid = grid.to(images.device, images.dtype).expand(batch_size, height, width, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] with torchvision's weights."""
    red, green, blue = images.unbind(dim=1)
    weights = GRAYSCALE_WEIGHTS
    return (weights[0] * red + weights[1] * green + weights[2] * blue).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    ratio = ratio.to(images.device, images.dtype)[:, None, None, None]
    return (ratio * images + (1 - ratio) * other).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), factors)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return _blend(images, grayscale(images), factors)


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift the hue of each image by its ``shifts`` (fractions of a turn, in [-0.5, 0.5])."""
    hue, saturation, value = rgb_to_hsv(images).unbind(dim=1)
    hue = torch.remainder(hue + shifts.to(images.device, images.dtype)[:, None, None], 1.0)
    return hsv_to_rgb(torch.stack([hue, saturation, value], dim=1))


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> HSV with hue in [0, 1)."""
    red, green, blue = images.unbind(dim=1)
    maximum, argmax = images.max(dim=1)
    minimum = images.min(dim=1).values
    chroma = maximum - minimum
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    saturation = torch.where(maximum > 0, chroma / torch.where(maximum > 0, maximum, torch.ones_like(maximum)),
                             torch.zeros_like(maximum))
    hue_red = torch.remainder((green - blue) / safe_chroma, 6.0)
    hue_green = (blue - red) / safe_chroma + 2.0
    hue_blue = (red - green) / safe_chroma + 4.0
    hue = torch.where(argmax == 0, hue_red, torch.where(argmax == 1, hue_green, hue_blue))
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    return torch.stack([torch.remainder(hue, 1.0), saturation, maximum], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`, in closed form: channel n (R, G, B: n = 5, 3, 1) is
    ``V - V S clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 H) mod 6``."""
    hue, saturation, value = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue, 6.0)
    return value - value * saturation * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


JITTER_STEPS = (
    ("brightness", adjust_brightness),
    ("contrast", adjust_contrast),
    ("saturation", adjust_saturation),
    ("hue", adjust_hue),
)


def color_jitter_batch(images: torch.Tensor, config: ColorJitterConfig, draws: StepDraws) -> torch.Tensor:
    """The enabled jitter steps in each sample's own order: at position k, the samples whose k-th step is s
    get s (computed on those samples only, so each step runs once per sample in all)."""
    images = images.clone()
    order = draws.jitter_order
    for position in range(4):
        for step_index, (name, step) in enumerate(JITTER_STEPS):
            if not getattr(config, name):
                continue
            chosen = (order[:, position] == step_index).nonzero().squeeze(1)
            if len(chosen):
                on_device = chosen.to(images.device)
                images[on_device] = step(images[on_device], getattr(draws, name)[chosen])
    return images


# ------------------------------------------------------------------------------------------------ crops on tensors
def resized_crop_batch(images: torch.Tensor, draws: torch.Tensor, crop_size: int, flip: bool) -> torch.Tensor:
    """RandomResizedCrop of stored images: uint8 [B, 3, H, W] -> float [B, 3, crop, crop] in [0, 255], each
    crop box (:func:`resized_crop_box`) resampled bilinearly to ``crop_size`` (no antialiasing), flipped when
    ``flip`` and its coin (column 4) is below 0.5."""
    batch_size, _, height, width = images.shape
    steps = (torch.arange(crop_size, dtype=torch.float64) + 0.5) / crop_size  # output pixel centres in [0, 1]
    grids = []
    for draw in draws.tolist():
        left, top, crop_width, crop_height = resized_crop_box(width, height, draw)
        xs = left + steps * crop_width  # input pixel coordinates (pixel edges at integers)
        if flip and draw[4] < 0.5:
            xs = xs.flip(0)
        ys = top + steps * crop_height
        grid_y, grid_x = torch.meshgrid(2 * ys / height - 1, 2 * xs / width - 1, indexing="ij")
        grids.append(torch.stack([grid_x, grid_y], dim=-1))
    grid = torch.stack(grids).to(images.device, torch.float32)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
