"""Image decoding and the two image sources: shapes, exact reproducibility under a generator, crop geometry."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from layouts_fixture import make_tiny_imagenet, write_tiny_jpeg
from ssl_challenge.data.imagenet import list_imagenet_images
from ssl_challenge.data.decoding import (CorruptImageError, decode_for_features, image_size, load_image_tensor,
                                         open_rgb, resize_shorter_side)
from ssl_challenge.data.file_images import FileImages
from ssl_challenge.data.images import IMAGENET_MEAN, IMAGENET_STD, PreloadedImages, draw_sample_seeds, normalise
from ssl_challenge.data.sources import build_image_source

torch.set_num_threads(1)


@pytest.fixture
def image_paths(tmp_path):
    return make_tiny_imagenet(tmp_path / "imagenet", n_classes=2, per_class=3)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_resize_shorter_side_keeps_aspect_like_torchvision():
    assert resize_shorter_side(Image.new("RGB", (20, 14)), 7).size == (10, 7)
    assert resize_shorter_side(Image.new("RGB", (14, 21)), 8).size == (8, 12)


def test_load_image_tensor_matches_pil_two_step_resize(image_paths):
    images = load_image_tensor(image_paths, resize_shorter=12, final_size=10, threads=2)
    assert images.shape == (len(image_paths), 3, 10, 10) and images.dtype == torch.uint8
    with Image.open(image_paths[-1]) as source:
        shorter = resize_shorter_side(source.convert("RGB"), 12)
    expected = np.asarray(shorter.resize((10, 10), Image.BILINEAR))
    assert np.array_equal(images[-1].permute(1, 2, 0).numpy(), expected)


def test_normalise_gives_the_out_of_place_formulas_values_in_a_new_tensor():
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    mean_tensor, std_tensor = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    stored = torch.randint(0, 256, (4, 3, 7, 9), dtype=torch.uint8, generator=generator(0))
    decoded = torch.randint(0, 256, (4, 7, 9, 3), dtype=torch.uint8, generator=generator(1)).permute(0, 3, 1, 2)
    augmented = stored.float() * 0.5
    for images in (stored, decoded, stored[:, :, 1:6, 2:7], augmented):
        kept = images.clone()
        result = normalise(images, mean, std)
        assert torch.equal(result, (images.float() / 255.0 - mean_tensor) / std_tensor)  # bit for bit
        assert result.is_contiguous() and torch.equal(images, kept)  # the input is left as it was


def test_preloaded_batches_are_reproducible_and_shaped():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=generator(0))
    source = PreloadedImages(images, crop_size=8, crop_padding=2)
    indices = torch.tensor([0, 3, 3, 9])
    first_generator, second_generator = generator(5), generator(5)
    first = source.load_batch(indices, augment=True, generator=first_generator)
    second = source.load_batch(indices, augment=True, generator=second_generator)
    assert first.shape == (4, 3, 8, 8) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert not torch.equal(first, source.load_batch(indices, augment=True, generator=first_generator))
    plain = source.load_batch(indices, augment=False, generator=generator(0))
    assert torch.allclose(plain, normalise(images[indices], IMAGENET_MEAN, IMAGENET_STD))


def test_resumed_generator_state_reproduces_the_next_batch():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator(1))
    source = PreloadedImages(images, crop_size=6, crop_padding=1)
    running = generator(3)
    source.load_batch(torch.arange(6), augment=True, generator=running)
    saved_state = running.get_state()
    expected = source.load_batch(torch.arange(6), augment=True, generator=running)
    resumed = torch.Generator()
    resumed.set_state(saved_state)
    assert torch.equal(source.load_batch(torch.arange(6), augment=True, generator=resumed), expected)


def test_augmented_crops_are_windows_of_the_padded_image_or_their_mirror():
    image = torch.arange(3 * 5 * 5, dtype=torch.uint8).view(1, 3, 5, 5)
    source = PreloadedImages(image, crop_size=4, crop_padding=1, mean=(0, 0, 0), std=(1 / 255,) * 3)
    batch = source.load_batch(torch.zeros(64, dtype=torch.long), augment=True, generator=generator(2))
    padded = torch.nn.functional.pad(image[0], (1, 1, 1, 1)).float()
    windows = [padded[:, top : top + 4, left : left + 4] for top in range(4) for left in range(4)]
    candidates = windows + [window.flip(-1) for window in windows]
    seen = set()
    for crop in batch:
        matches = [index for index, window in enumerate(candidates) if torch.allclose(crop, window)]
        assert matches, "a crop is not a window of the padded image"
        seen.add(matches[0])
    assert len(seen) > 8 and any(index >= 16 for index in seen)  # varied offsets, and flips happen


def test_preloaded_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        PreloadedImages(torch.zeros(2, 3, 4, 4))
    source = PreloadedImages(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        source.load_batch(torch.tensor([2]), augment=False, generator=generator(0))


def test_file_images_reproducible_and_centre_crop(image_paths):
    source = FileImages(image_paths, crop_size=8, resize_shorter=10, threads=2)
    indices = torch.tensor([1, 4, 4])
    first = source.load_batch(indices, augment=True, generator=generator(7))
    assert first.shape == (3, 3, 8, 8)
    assert torch.equal(first, source.load_batch(indices, augment=True, generator=generator(7)))
    plain = source.load_batch(torch.tensor([0]), augment=False, generator=generator(0))
    with Image.open(image_paths[0]) as opened:
        shorter = resize_shorter_side(opened.convert("RGB"), 10)
    left, top = round((shorter.width - 8) / 2), round((shorter.height - 8) / 2)
    expected = torch.from_numpy(np.array(shorter.crop((left, top, left + 8, top + 8)))).permute(2, 0, 1)
    assert torch.allclose(plain[0], normalise(expected[None], IMAGENET_MEAN, IMAGENET_STD)[0])


def test_file_images_whole_image_crop_is_the_resized_image(tmp_path):
    path = tmp_path / "square.jpg"
    write_tiny_jpeg(path, 12, 12, seed=0)
    source = FileImages([path], crop_size=6, resize_shorter=6, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    batch = source.load_batch(torch.zeros(8, dtype=torch.long), augment=True, generator=generator(0))
    with Image.open(path) as opened:
        resized = torch.from_numpy(np.array(opened.convert("RGB").resize((6, 6), Image.BILINEAR))).permute(2, 0, 1)
    expected = normalise(resized[None], IMAGENET_MEAN, IMAGENET_STD)[0]
    for crop in batch:
        assert torch.allclose(crop, expected) or torch.allclose(crop, expected.flip(-1))


# ------------------------------------------------------------------------------------------------ torchvision v2 crop
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255,) * 3}  # normalise() leaves the pixel values


def torchvision_crop_and_flip(path, sample_seed: int, crop_size: int, scale, ratio) -> np.ndarray:
    """v2.Compose([RandomResizedCrop, RandomHorizontalFlip]) of the decoded image with torch seeded by the seed that
    the sample's generator draws first (FileImages' crop seed)."""
    from torchvision.transforms import v2

    crop_seed = draw_sample_seeds(1, torch.Generator().manual_seed(sample_seed))[0]
    pipeline = v2.Compose([v2.RandomResizedCrop(crop_size, scale=scale, ratio=ratio, antialias=True),
                           v2.RandomHorizontalFlip()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(crop_seed)
        return np.asarray(pipeline(open_rgb(path)))


@pytest.mark.parametrize("width, height, scale", [
    (40, 30, (0.08, 1.0)),
    (23, 47, (0.08, 1.0)),
    (60, 20, (0.08, 1.0)),  # aspect 3: a try fits only below ~44% of the area, most samples reject some tries
    (64, 32, (0.9, 1.0)),  # no try can fit (height >= 37 > 32): every sample takes the centre-crop fallback
])
def test_random_resized_crop_and_flip_are_torchvision_v2s(tmp_path, width, height, scale):
    path = tmp_path / "image.jpg"
    Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    ratio = (3 / 4, 4 / 3)
    source = FileImages([path], crop_size=16, resize_shorter=16, scale=scale, ratio=ratio, threads=2, **IDENTITY)
    seeds = [0, 1, 2, 3, 17, 2**40 + 5, 2**62 + 11, 123456789, 100, 101, 102, 103]
    batch = source.load_batch_seeded(torch.zeros(len(seeds), dtype=torch.long), seeds)
    assert batch.shape == (len(seeds), 3, 16, 16)
    ours = batch.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for crop, seed in zip(ours, seeds):
        np.testing.assert_array_equal(crop, torchvision_crop_and_flip(path, seed, 16, scale, ratio))
    crop_seeds = [draw_sample_seeds(1, generator(seed))[0] for seed in seeds]
    draws = source.draw_resized_crops([(width, height)] * len(seeds), crop_seeds)
    assert {draw.flip for draw in draws} == {False, True}
    if scale == (0.9, 1.0):  # the fallback by hand: full height, width round(32 * 4/3) = 43, centred
        assert {(draw.top, draw.left, draw.height, draw.width) for draw in draws} == {(0, 10, 32, 43)}
    else:
        assert len({(draw.top, draw.left, draw.height, draw.width) for draw in draws}) == len(seeds)
        assert all(draw.top + draw.height <= height and draw.left + draw.width <= width for draw in draws)


def test_crop_draws_leave_torchs_generator_alone_and_run_in_the_calling_thread(image_paths, monkeypatch):
    import threading

    source = FileImages(image_paths, crop_size=8, resize_shorter=10, threads=3)
    drawing_threads, decoding_threads = set(), set()
    draw, crop = source.draw_resized_crops, source.resized_crop
    monkeypatch.setattr(source, "draw_resized_crops",
                        lambda *args: drawing_threads.add(threading.get_ident()) or draw(*args))
    monkeypatch.setattr(source, "resized_crop",
                        lambda *args: decoding_threads.add(threading.get_ident()) or crop(*args))
    torch.manual_seed(99)
    expected = torch.rand(4)
    torch.manual_seed(99)
    source.load_batch(torch.arange(len(image_paths)), augment=True, generator=generator(1))
    assert torch.equal(torch.rand(4), expected)  # the global generator continues as if nothing had drawn
    assert drawing_threads == {threading.get_ident()}
    assert decoding_threads and threading.get_ident() not in decoding_threads


def test_build_image_source_chooses_and_checks(image_paths):
    preloaded = build_image_source(image_paths, preload=True, resize_shorter=8, crop_size=8, crop_padding=2)
    assert isinstance(preloaded, PreloadedImages) and len(preloaded) == len(image_paths)
    assert preloaded.images.shape[-2:] == (8, 8)
    from_files = build_image_source(image_paths, preload=False, resize_shorter=10, crop_size=8)
    assert isinstance(from_files, FileImages)
    with pytest.raises(ValueError, match="pretrain_data.crop_padding"):
        build_image_source(image_paths, preload=False, resize_shorter=10, crop_size=8, crop_padding=4)


# ------------------------------------------------------------------------------------------------ corrupt images
@pytest.fixture
def tree_with_corrupt_images(tmp_path):
    """A tiny ImageNet tree (2 classes x 4) whose image 1 is a truncated JPEG and image 6 a text file.
    Returns (listed paths, indices of the corrupt ones)."""
    root = tmp_path / "imagenet"
    paths = make_tiny_imagenet(root, n_classes=2, per_class=4)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    paths[6].write_text("this is not an image\n")
    assert list_imagenet_images(root) == paths
    return paths, [1, 6]


def test_every_truncation_of_a_jpeg_is_caught(tmp_path):
    """Pillow with LOAD_TRUNCATED_IMAGES False raises for a JPEG cut at any byte (baseline and progressive)."""
    for progressive in (False, True):
        path = tmp_path / f"whole_{progressive}.jpg"
        pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, progressive=progressive)
        data = path.read_bytes()
        assert open_rgb(path).size == (16, 12)
        cut = tmp_path / "cut.jpg"
        for length in range(len(data)):
            cut.write_bytes(data[:length])
            with pytest.raises(CorruptImageError, match="cut.jpg"):
                open_rgb(cut)


def test_pil_loading_truncated_images_is_refused(image_paths, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        open_rgb(image_paths[0])


def test_corrupt_images_name_their_path_by_default(tree_with_corrupt_images):
    paths, corrupt = tree_with_corrupt_images
    for index in corrupt:
        with pytest.raises(CorruptImageError, match=rf"cannot decode image {paths[index]}"):
            decode_for_features(paths[index], 12, 10)
    with pytest.raises(CorruptImageError, match=rf"{paths[1]} \(voc07_test\): OSError: .*[Tt]runcated") as raised:
        load_image_tensor(paths, resize_shorter=12, final_size=10, dataset="voc07_test")
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)  # survives a process boundary
    with pytest.raises(CorruptImageError, match=rf"{paths[6]} \(pretraining images\): UnidentifiedImageError"):
        build_image_source(paths[2:], preload=True, resize_shorter=8, crop_size=8)
    source = build_image_source(paths, preload=False, resize_shorter=10, crop_size=8)
    assert len(source.load_batch(torch.tensor([0, 7]), augment=True, generator=generator(0))) == 2
    for augment in (True, False):
        with pytest.raises(CorruptImageError, match=rf"{paths[6]} \(pretraining images\)"):
            source.load_batch(torch.tensor([0, 6]), augment=augment, generator=generator(0))
    probe = FileImages(paths, crop_size=8, resize_shorter=10, dataset="places205_val")
    with pytest.raises(CorruptImageError, match=rf"{paths[1]} \(places205_val\).*evaluation splits cannot"):
        probe.load_batch(torch.tensor([1]), augment=False, generator=generator(0))


def test_a_missing_file_is_not_a_corrupt_image(tree_with_corrupt_images):
    paths, _ = tree_with_corrupt_images
    paths[0].unlink()
    source = build_image_source(paths, preload=False, resize_shorter=10, crop_size=8, skip_corrupt_images=True)
    with pytest.raises(FileNotFoundError, match=str(paths[0])):
        source.load_batch(torch.tensor([0]), augment=False, generator=generator(0))


def test_preloading_drops_corrupt_images_when_asked(tree_with_corrupt_images):
    paths, corrupt = tree_with_corrupt_images
    readable = [path for index, path in enumerate(paths) if index not in corrupt]
    messages = []
    source = build_image_source(paths, preload=True, resize_shorter=8, crop_size=8, skip_corrupt_images=True,
                                threads=2, log=messages.append)
    assert isinstance(source, PreloadedImages) and len(source) == len(paths) - 2
    assert torch.equal(source.images, load_image_tensor(readable, resize_shorter=8, final_size=8))
    assert messages[0].startswith("skipped 2 corrupt image(s) of 8 in pretraining images")
    assert [message.split()[1] for message in messages[1:]] == [f"{paths[1]}:", f"{paths[6]}:"]


def test_decoding_from_files_substitutes_corrupt_samples_deterministically(tree_with_corrupt_images):
    paths, _ = tree_with_corrupt_images
    messages = []
    source = build_image_source(paths, preload=False, resize_shorter=10, crop_size=8, skip_corrupt_images=True,
                                threads=3, log=messages.append)
    everything = torch.arange(len(paths))
    first = source.load_batch(everything, augment=True, generator=generator(4))
    assert source.corrupt_paths == {1: str(paths[1]), 6: str(paths[6])}
    assert len(messages) == 2 and "skipped corrupt image 2 of pretraining images" in messages[1]
    again = build_image_source(paths, preload=False, resize_shorter=10, crop_size=8, skip_corrupt_images=True,
                               threads=1, log=messages.append)
    assert torch.equal(again.load_batch(everything, augment=True, generator=generator(4)), first)
    # a corrupt sample is the next readable image (6 -> 7, 1 -> 2) decoded with the corrupt sample's own draws
    clean = FileImages(paths, crop_size=8, resize_shorter=10)
    substitutes = torch.tensor([0, 2, 2, 3, 4, 5, 7, 7])
    assert torch.equal(clean.load_batch(substitutes, augment=True, generator=generator(4)), first)
    plain = source.load_batch(torch.tensor([6, 7]), augment=False, generator=generator(0))
    assert torch.equal(plain[0], plain[1])
    assert len(messages) == 4  # each corrupt image is reported once per source


def test_an_image_corrupt_only_past_its_header_sends_its_sample_on_with_a_box_for_the_next(tmp_path):
    """The random_resized box is drawn from the header's size before decoding: an image whose pixel data is cut
    (header intact) fails in the decoding, and its sample is made again from the next image, with a box drawn
    from the same seed for that image's size."""
    paths = []
    for index, (width, height) in enumerate([(40, 30), (36, 44), (50, 26)]):
        paths.append(tmp_path / f"image_{index}.jpg")
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1], quality=95)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 200])
    assert image_size(paths[1]) == (36, 44)
    with pytest.raises(CorruptImageError):
        open_rgb(paths[1])
    seeds = [5, 6, 7, 8]
    with pytest.raises(CorruptImageError, match=re.escape(str(paths[1]))):
        FileImages(paths, crop_size=12, resize_shorter=12).load_batch_seeded(torch.tensor([0, 1, 2, 1]), seeds)
    messages = []
    skipping = FileImages(paths, crop_size=12, resize_shorter=12, threads=2, skip_corrupt=True, log=messages.append,
                          **IDENTITY)
    batch = skipping.load_batch_seeded(torch.tensor([0, 1, 2, 1]), seeds)
    assert skipping.corrupt_paths == {1: str(paths[1])} and len(messages) == 1
    expected = FileImages(paths, crop_size=12, resize_shorter=12, **IDENTITY).load_batch_seeded(
        torch.tensor([0, 2, 2, 2]), seeds)
    assert torch.equal(batch, expected)
    np.testing.assert_array_equal(batch[1].round().to(torch.uint8).permute(1, 2, 0).numpy(),
                                  torchvision_crop_and_flip(paths[2], 6, 12, (0.08, 1.0), (3 / 4, 4 / 3)))


def test_pretraining_continues_over_corrupt_images_when_asked(tree_with_corrupt_images, tmp_path):
    """A whole (tiny) pretraining run from files: fails naming the file by default, completes with the switch
    on, and two runs give identical weights."""
    from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs the loop

    paths, _ = tree_with_corrupt_images
    config = {"method": "rot", "backbone": {"name": "small_resnet", "widths": [4, 4, 4, 4]}, "epochs": 2,
              "batch_size": 4, "optimizer": {"lr": 0.05}, "schedule": {}, "checkpoint_every": 1}

    def run(run_dir, skip, log):
        images = build_image_source(paths, preload=False, resize_shorter=10, crop_size=8, threads=2,
                                    skip_corrupt_images=skip, log=log)
        return pretrain(config, images, run_dir, torch.device("cpu"), log=log)

    with pytest.raises(CorruptImageError, match=f"{re.escape(str(paths[1]))}|{re.escape(str(paths[6]))}"):
        run(tmp_path / "strict", False, lambda message: None)
    first_log, second_log = [], []
    weights = [torch.load(run(tmp_path / name, True, log.append), weights_only=False)["backbone"]
               for name, log in (("first", first_log), ("second", second_log))]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    for log in (first_log, second_log):
        skipped = [message for message in log if message.startswith("skipped corrupt image")]
        assert len(skipped) == 2 and "skipped corrupt image 2 of" in skipped[-1]
