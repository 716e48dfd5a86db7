"""Training input pipeline throughput: images/s of the DataLoader pipeline against pure JPEG decode + resize with
the same worker processes, and against the loader before the DataLoader (a per-batch thread pool in the training
process, kept below as ``old_load_batch``).

Builds a folder of ImageNet-sized JPEGs (smooth random content, shorter side >= 256) once, then times, on the same
images, batch size and cores, each pipeline over every image (best of ``--rounds``, rounds interleaved so that load
from other jobs hits all of them alike):

- ``decode+resize``: a DataLoader whose workers only open each JPEG, resize its shorter side to 256, centre-crop
  224 and stack the uint8 batch (the floor any augmenting pipeline pays);
- ``train (crop+flip)``: ``FileImages`` with its default pipeline (torchvision v2's RandomResizedCrop 224 + flip
  on the decoded PIL image), normalised float batches, through ``data.loading.load_batches`` with per-sample seeds;
- ``train (reference DC)``: the same with the reference DC/ODC steps after the crop (rotation 2, colour jitter
  0.4/0.4/1.0/0.5, grayscale 0.2);
- ``old loader``: the previous ``FileImages.load_batch`` (one generator per batch, decoding in a pool of
  ``--workers`` threads in this process, no prefetching, its own clamped RandomResizedCrop-style box resampled by
  PIL's ``resize(box=...)``, its out-of-place normalisation).

    PYTHONPATH=src .venv/bin/python benchmarks/input_pipeline.py [--images 512] [--workers 2] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_challenge.data.decoding import open_rgb, resize_shorter_side
from ssl_challenge.data.file_images import FileImages
from ssl_challenge.data.images import steps_after_crop
from ssl_challenge.data.loading import BatchRequest, load_batches
from ssl_challenge.data.probe_images import centre_box
from ssl_challenge.data.transforms import AugmentationConfig, ColorJitterConfig, resized_crop_box

REFERENCE_DC = AugmentationConfig(rotation_degrees=2, color_jitter=ColorJitterConfig(0.4, 0.4, 1.0, 0.5),
                                  grayscale_probability=0.2)


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of 256-500 px per side: a small random image upsampled (smooth, like photos compress)
    plus mild noise, quality 90."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        height, width = int(rng.integers(256, 400)), int(rng.integers(300, 500))
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                          Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3)), 0, 255)
        paths.append(folder / f"image_{index:05d}.JPEG")
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1], quality=90)
    return paths


class DecodeResize(torch.utils.data.Dataset):
    def __init__(self, paths, shorter: int = 256, crop: int = 224):
        self.paths, self.shorter, self.crop = paths, shorter, crop

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            image = resize_shorter_side(image.convert("RGB"), self.shorter)
        return torch.from_numpy(np.array(image.crop(centre_box(*image.size, self.crop)))).permute(2, 0, 1)


def time_decode_resize(paths, workers: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(DecodeResize(paths), batch_size=batch_size, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def time_training(paths, workers: int, batch_size: int, augmentation: AugmentationConfig) -> float:
    source = FileImages(paths, crop_size=224, resize_shorter=256, augmentation=augmentation)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))
    requests = [BatchRequest(order[start:start + batch_size], True, slot_seed=(0, 0, start))
                for start in range(0, len(paths), batch_size)]
    start = time.perf_counter()
    count = sum(len(batch) for batch in load_batches(source, requests, workers))
    return count / (time.perf_counter() - start)


def old_load_batch(source: FileImages, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``FileImages.load_batch(indices, augment=True, generator)`` as it was before the DataLoader pipeline."""
    indices = indices.tolist()
    draws = source.draw_crop_parameters(len(indices), generator).tolist()
    if source.augmentation.resolved_crop(preloaded=False) == "padded":
        crop = source.padded
    else:
        def crop(path, draw):
            return old_resized_crop(source, path, draw)
    jobs = [lambda index=index, draw=draw: source.decode_sample(index, crop, draw)
            for index, draw in zip(indices, draws)]
    with ThreadPoolExecutor(source.threads) as pool:
        arrays = list(pool.map(lambda job: job(), jobs))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    batch = steps_after_crop(batch, source.augmentation, generator)
    return old_normalise(batch, source.mean, source.std)


def old_normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``data.images.normalise`` as it was then: the same values, computed out of place on [B, H, W, 3] views."""
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_tensor) / std_tensor


def old_resized_crop(source: FileImages, path, draw) -> np.ndarray:
    """The previous random_resized crop: a box from five uniforms (clamped, no rejection), one PIL resize of the
    box (which reads pixels around it), flip by the fifth number."""
    image = open_rgb(path)
    left, top, crop_width, crop_height = resized_crop_box(image.size[0], image.size[1], draw)
    image = image.resize((source.crop_size, source.crop_size), Image.BILINEAR,
                         box=(left, top, left + crop_width, top + crop_height))
    if source.augmentation.flip and draw[4] < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


def time_old_loader(paths, threads: int, batch_size: int, augmentation: AugmentationConfig) -> float:
    source = FileImages(paths, crop_size=224, resize_shorter=256, threads=threads, augmentation=augmentation)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    count = 0
    for position, first in enumerate(range(0, len(paths), batch_size)):
        generator = torch.Generator().manual_seed(position)
        count += len(old_load_batch(source, order[first:first + batch_size], generator))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, help="reuse (or create) the JPEG folder here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training process's own threads are busy training
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.folder or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        paths = sorted(folder.glob("*.JPEG"))[: args.images]
        if len(paths) < args.images:
            paths = write_jpegs(folder, args.images)
        pipelines = {
            "decode+resize": lambda: time_decode_resize(paths, args.workers, args.batch_size),
            "train (crop+flip)": lambda: time_training(paths, args.workers, args.batch_size, AugmentationConfig()),
            "train (reference DC)": lambda: time_training(paths, args.workers, args.batch_size, REFERENCE_DC),
            "old loader (crop+flip)": lambda: time_old_loader(paths, args.workers, args.batch_size,
                                                              AugmentationConfig()),
            "old loader (reference DC)": lambda: time_old_loader(paths, args.workers, args.batch_size, REFERENCE_DC),
        }
        best = {name: 0.0 for name in pipelines}
        for _ in range(args.rounds):
            for name, run in pipelines.items():
                best[name] = max(best[name], run())
    print(f"{args.images} JPEGs (shorter side 256-400 px), batch {args.batch_size}, {args.workers} workers / threads, "
          f"best of {args.rounds}")
    for name, rate in best.items():
        print(f"  {name:28s} {rate:8.1f} images/s")
    floor = best["decode+resize"]
    for kind in ("crop+flip", "reference DC"):
        new, old = best[f"train ({kind})"], best[f"old loader ({kind})"]
        print(f"{kind}: training pipeline / decode+resize = {new / floor:.2f} (target >= 0.85); "
              f"/ old loader = {new / old:.2f}")


if __name__ == "__main__":
    main()
