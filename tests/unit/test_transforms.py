"""The pretraining pipeline (models.<name>.augmentation): every step against torchvision's kernels image by image,
the crops against hand-made expectations, the image sources' determinism, and the default's equality with today's
pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from layouts_fixture import make_tiny_imagenet
from ssl_challenge.core.config import ConfigError, from_dict
from ssl_challenge.data.file_images import FileImages
from ssl_challenge.data.images import PreloadedImages, draw_sample_seeds, random_crop_and_flip
from ssl_challenge.data.sources import build_image_source
from ssl_challenge.data.transforms import (
    EXTRA_DRAWS,
    AugmentationConfig,
    ColorJitterConfig,
    StepDraws,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_steps_after_crop,
    color_jitter_batch,
    draw_step_parameters,
    grayscale,
    resized_crop_batch,
    rotate_batch,
)
from ssl_challenge.engine.train import PretrainConfig

torch.set_num_threads(1)
REFERENCE_DC = {"crop": "random_resized", "flip": True, "rotation_degrees": 2,
                "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 1.0, "hue": 0.5},
                "grayscale_probability": 0.2}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(batch=4, size=7, seed=0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=generator(seed))


@pytest.mark.parametrize("ours, theirs, factors", [
    (adjust_brightness, TF.adjust_brightness, [0.6, 1.4, 1.0, 0.0]),
    (adjust_contrast, TF.adjust_contrast, [0.6, 1.4, 1.0, 0.0]),
    (adjust_saturation, TF.adjust_saturation, [0.0, 2.0, 0.5, 1.0]),
    (adjust_hue, TF.adjust_hue, [0.3, -0.5, 0.1, 0.0]),
])
def test_colour_steps_match_torchvision_per_image(ours, theirs, factors):
    images = random_images()
    adjusted = ours(images, torch.tensor(factors, dtype=torch.float64))
    for image, factor, result in zip(images, factors, adjusted):
        assert torch.allclose(result, theirs(image, factor), atol=2e-6)


def test_grayscale_and_rotation_match_torchvision():
    images = random_images(size=9)
    assert torch.allclose(grayscale(images), TF.rgb_to_grayscale(images), atol=1e-6)
    angles = torch.tensor([2.0, -30.0, 90.0, 17.0])
    rotated = rotate_batch(images, angles)
    for image, angle, result in zip(images, angles.tolist(), rotated):
        assert torch.equal(result, TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST))


def test_rotation_by_a_quarter_turn_is_counter_clockwise():
    image = torch.arange(9.0).view(1, 1, 3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert rotate_batch(image, torch.tensor([90.0]))[0, 0].tolist() == [[2, 5, 8], [1, 4, 7], [0, 3, 6]]


def test_jitter_runs_each_sample_in_its_own_order():
    images = random_images(batch=3)
    config = ColorJitterConfig(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2)
    orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]])
    factors = {"brightness": [1.3, 0.7, 1.1], "contrast": [0.6, 1.4, 1.2], "saturation": [0.5, 1.5, 0.9],
               "hue": [0.1, -0.2, 0.05]}
    draws = StepDraws(angles=torch.zeros(3), jitter_order=orders, grayscale=torch.zeros(3, dtype=torch.bool),
                      **{name: torch.tensor(values, dtype=torch.float64) for name, values in factors.items()})
    jittered = color_jitter_batch(images, config, draws)
    steps = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    names = list(factors)
    for sample in range(3):
        expected = images[sample]
        for step in orders[sample].tolist():
            expected = steps[step](expected, factors[names[step]][sample])
        assert torch.allclose(jittered[sample], expected, atol=1e-5)


def test_step_draws_have_a_fixed_count_and_the_configured_ranges():
    config = from_dict(AugmentationConfig, REFERENCE_DC)
    first, second = generator(3), generator(3)
    draws = draw_step_parameters(config, 2000, first)
    torch.rand(2000, EXTRA_DRAWS, generator=second, dtype=torch.float64)
    assert torch.equal(torch.rand(1, generator=first), torch.rand(1, generator=second))  # same draws consumed
    draw_step_parameters(AugmentationConfig(), 2000, second)  # whatever is enabled
    draw_step_parameters(config, 2000, first)
    assert torch.equal(torch.rand(1, generator=first), torch.rand(1, generator=second))
    assert -2 <= float(draws.angles.min()) and float(draws.angles.max()) <= 2
    assert 0.6 <= float(draws.brightness.min()) and float(draws.brightness.max()) <= 1.4
    assert 0.0 <= float(draws.saturation.min()) and float(draws.saturation.max()) <= 2.0
    assert -0.5 <= float(draws.hue.min()) and float(draws.hue.max()) <= 0.5
    assert 0.17 < draws.grayscale.float().mean() < 0.23
    assert all(sorted(order) == [0, 1, 2, 3] for order in draws.jitter_order.tolist())


def test_grayscale_probability_one_gives_equal_channels():
    config = AugmentationConfig(grayscale_probability=1.0)
    images = random_images()
    result = apply_steps_after_crop(images, config, draw_step_parameters(config, 4, generator(0)))
    assert torch.allclose(result, grayscale(images).expand_as(images))


def test_config_is_checked_and_rides_in_the_pretrain_config():
    config = from_dict(PretrainConfig, {"method": "dc", "backbone": {"name": "small_resnet"}, "epochs": 1,
                                        "optimizer": {"lr": 0.1}, "augmentation": REFERENCE_DC})
    assert config.augmentation.color_jitter == ColorJitterConfig(0.4, 0.4, 1.0, 0.5)
    assert config.augmentation.crop_scale == (0.08, 1.0)
    assert AugmentationConfig().resolved_crop(preloaded=True) == "padded"
    assert AugmentationConfig().resolved_crop(preloaded=False) == "random_resized"
    with pytest.raises(ConfigError, match="augmentation.crop"):
        AugmentationConfig(crop="centre")
    with pytest.raises(ConfigError, match="augmentation.crop_scale"):
        AugmentationConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ConfigError, match="color_jitter.hue"):
        ColorJitterConfig(hue=0.7)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(AugmentationConfig, {"colour_jitter": {}}, where="models.dc.augmentation")


def test_resized_crop_of_a_box_its_own_size_copies_the_pixels_and_flips():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    # area 4/36 with ratio 1: a 2x2 box; positions 0.5 -> left = top = int(0.5 * 5) = 2; coin 0.9 / 0.1
    area = torch.tensor(4 / 36, dtype=torch.float64)
    draws = torch.tensor([[area, 0.0, 0.5, 0.5, 0.9], [area, 0.0, 0.5, 0.5, 0.1]], dtype=torch.float64)
    crops = resized_crop_batch(images, draws, crop_size=2, flip=True)
    assert torch.equal(crops[0], images[0, :, 2:4, 2:4].float())
    assert torch.equal(crops[1], images[1, :, 2:4, 2:4].flip(-1).float())
    assert torch.equal(resized_crop_batch(images, draws, crop_size=2, flip=False)[1], images[1, :, 2:4, 2:4].float())


def test_preloaded_default_is_todays_padded_crop_and_flip():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator(0))
    indices = torch.tensor([0, 2, 5, 5])
    identity = {"mean": (0, 0, 0), "std": (1 / 255,) * 3}
    default = PreloadedImages(images, crop_size=6, crop_padding=2, **identity)
    explicit = PreloadedImages(images, crop_size=6, crop_padding=2, augmentation=AugmentationConfig(crop="padded"),
                               **identity)
    expected = random_crop_and_flip(images[indices], 6, 2, generator(4)).float()
    assert torch.allclose(default.load_batch(indices, True, generator(4)), expected, atol=1e-4)
    assert torch.allclose(explicit.load_batch(indices, True, generator(4)), expected, atol=1e-4)
    no_flip = PreloadedImages(images, crop_size=8, crop_padding=0, augmentation=AugmentationConfig(flip=False),
                              **identity)
    assert torch.allclose(no_flip.load_batch(indices, True, generator(4)), images[indices].float(), atol=1e-4)


def test_preloaded_reference_pipeline_is_reproducible_per_generator():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=generator(0))
    source = PreloadedImages(images, crop_size=12, augmentation=from_dict(AugmentationConfig, REFERENCE_DC))
    indices = torch.tensor([0, 1, 2, 3, 4, 5])
    first = source.load_batch(indices, True, generator(9))
    assert first.shape == (6, 3, 12, 12) and torch.isfinite(first).all()
    assert torch.equal(first, source.load_batch(indices, True, generator(9)))
    assert not torch.equal(first, source.load_batch(indices, True, generator(10)))


def test_file_images_apply_the_pipeline_and_the_padded_crop(tmp_path):
    paths = make_tiny_imagenet(tmp_path / "imagenet", n_classes=2, per_class=2)
    identity = {"mean": (0, 0, 0), "std": (1 / 255,) * 3}
    reference = FileImages(paths, crop_size=8, resize_shorter=10,
                           augmentation=from_dict(AugmentationConfig, REFERENCE_DC), **identity)
    indices = torch.tensor([0, 1, 2, 3])
    batch = reference.load_batch(indices, True, generator(1))
    assert batch.shape == (4, 3, 8, 8) and torch.equal(batch, reference.load_batch(indices, True, generator(1)))
    gray = FileImages(paths, crop_size=8, resize_shorter=10, augmentation=AugmentationConfig(grayscale_probability=1.0),
                      **identity).load_batch(indices, True, generator(1))
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-3) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-3)

    padded = build_image_source(paths, preload=False, resize_shorter=6, crop_size=6, crop_padding=1,
                                augmentation=AugmentationConfig(crop="padded", flip=False), **identity)
    preloaded = build_image_source(paths, preload=True, resize_shorter=6, crop_size=6, **identity)
    crops = padded.load_batch(indices, True, generator(2)).round().to(torch.uint8)
    # one seed per sample from the batch's generator, then the sample's own draws (FileImages.load_batch_seeded)
    draws = torch.cat([padded.draw_crop_parameters(1, generator(seed)) for seed in draw_sample_seeds(4, generator(2))])
    for crop, stored, draw in zip(crops, preloaded.images[indices], draws.tolist()):
        top, left = int(draw[3] * 3), int(draw[2] * 3)  # 3 positions: padded side 8 - crop 6 + 1
        expected = torch.nn.functional.pad(stored, (1, 1, 1, 1))[:, top:top + 6, left:left + 6]
        assert torch.equal(crop, expected)


def test_training_with_the_reference_pipeline_and_sobel_resumes_exactly(tmp_path):
    from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs the loop
    from ssl_challenge.models.backbones import load_backbone

    pixels = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=generator(0))
    config = {"method": "rot", "backbone": {"name": "small_resnet", "widths": [8, 8, 8, 8], "sobel": True},
              "epochs": 2, "batch_size": 16, "optimizer": {"lr": 0.05}, "checkpoint_every": 2,
              "augmentation": REFERENCE_DC}
    augmentation = from_dict(PretrainConfig, config).augmentation

    def images():
        return PreloadedImages(pixels, crop_size=12, augmentation=augmentation)

    reference = pretrain(config, images(), tmp_path / "reference", torch.device("cpu"), log=lambda _: None)
    assert pretrain(config, images(), tmp_path / "resumed", torch.device("cpu"), log=lambda _: None,
                    stop_after_iterations=3) is None
    resumed = pretrain(config, images(), tmp_path / "resumed", torch.device("cpu"), log=lambda _: None)
    first, second = (torch.load(path, map_location="cpu", weights_only=False) for path in (reference, resumed))
    assert all(torch.equal(first["backbone"][key], second["backbone"][key]) for key in first["backbone"])
    backbone, backbone_config = load_backbone(reference, torch.device("cpu"))
    assert backbone_config["sobel"] is True and backbone.sobel is not None
