"""The DataLoader input pipeline: batches asked for by what determines them, whoever makes them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_challenge.core.config import ConfigError
from ssl_challenge.data.file_images import FileImages
from ssl_challenge.data.images import PreloadedImages
from ssl_challenge.data.loading import (BatchRequest, check_workers, index_batches,
                                        load_batches, make_batch, sample_seed)
from ssl_challenge.data.probe_images import ProbeImages
from ssl_challenge.data.transforms import AugmentationConfig, ColorJitterConfig


@pytest.fixture(scope="module")
def jpeg_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    generator = np.random.default_rng(0)
    paths = []
    for index in range(10):
        pixels = generator.integers(0, 256, (20 + index, 24, 3), dtype=np.uint8)
        paths.append(folder / f"image_{index}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def augmented_requests(order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[BatchRequest]:
    return [BatchRequest(order[start:start + batch_size], True, slot_seed=(seed, epoch, start))
            for start in range(0, len(order), batch_size)]


REFERENCE = AugmentationConfig(rotation_degrees=2, color_jitter=ColorJitterConfig(0.4, 0.4, 1.0, 0.5),
                               grayscale_probability=0.2)


@pytest.mark.parametrize("make_source", [
    lambda paths: FileImages(paths, crop_size=12, resize_shorter=16, augmentation=REFERENCE),
    lambda paths: ProbeImages(paths, resize_shorter=16, crop_size=12),
], ids=["pretraining_files", "probe"])
def test_a_sample_gets_the_same_augmentation_with_0_and_2_workers_and_in_any_batch(jpeg_paths, make_source):
    source = make_source(jpeg_paths)
    order = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    requests = augmented_requests(order, 4, seed=5, epoch=2)
    in_process = torch.cat(list(load_batches(source, requests, workers=0)))
    with_workers = torch.cat(list(load_batches(source, requests, workers=2)))
    assert torch.equal(in_process, with_workers)
    # slot 6 (sample 2) alone, asked for by its slot: the same tensor as inside its batch of 4
    alone = make_batch(source, BatchRequest(torch.tensor([2]), True, slot_seed=(5, 2, 6)))
    assert torch.equal(alone[0], in_process[6])
    # another epoch draws other crops
    other_epoch = torch.cat(list(load_batches(source, augmented_requests(order, 4, seed=5, epoch=3))))
    assert not torch.equal(other_epoch, in_process)


def test_sample_seeds_are_distinct_and_stable():
    seeds = {sample_seed(0, epoch, slot) for epoch in range(3) for slot in range(100)}
    assert len(seeds) == 300 and all(0 <= seed < 2**63 for seed in seeds)
    assert sample_seed(7, 1, 2) == sample_seed(7, 1, 2)


def test_preloaded_batches_keep_their_batch_generator_with_workers():
    """The embedded default's training batches: one generator per batch (as before the DataLoader), so the
    batches are today's exactly, whichever process makes them; ``keep`` slices one rank's share."""
    images = torch.randint(0, 256, (12, 3, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = PreloadedImages(images, crop_size=8, crop_padding=2)
    indices = [torch.tensor([0, 5, 7, 3]), torch.tensor([11, 2, 9, 4])]
    requests = [BatchRequest(batch, True, batch_seed=40 + number, keep=(2, 4)) for number, batch in enumerate(indices)]
    expected = [source.load_batch(batch, True, torch.Generator().manual_seed(40 + number))[2:4]
                for number, batch in enumerate(indices)]
    for workers in (0, 2):
        made = list(load_batches(source, requests, workers=workers))
        assert len(made) == 2 and all(torch.equal(a, b) for a, b in zip(made, expected))


def test_unaugmented_batches_in_index_order(jpeg_paths):
    source = ProbeImages(jpeg_paths, resize_shorter=16, crop_size=12)
    requests = index_batches(len(source), 3)
    assert [request.indices.tolist() for request in requests] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    expected = source.load_batch(torch.arange(10), False, torch.Generator())
    assert torch.equal(torch.cat(list(load_batches(source, requests, workers=2))), expected)


def test_bad_worker_settings_name_their_config_key():
    assert check_workers(0) == 0 and check_workers(3) == 3
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="resources.data_workers"):
            check_workers(bad)


def test_training_refuses_a_batch_that_the_processes_cannot_share_before_it_starts(tmp_path, monkeypatch):
    from ssl_challenge.engine import distributed
    from ssl_challenge.stages.pretraining import train as pretrain

    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    images = PreloadedImages(torch.zeros(8, 3, 8, 8, dtype=torch.uint8))
    config = {"method": "rot", "backbone": {"name": "small_resnet", "widths": [4, 4, 4, 4]}, "epochs": 1,
              "batch_size": 6, "optimizer": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="batch_size: 6 does not split over the 4 training processes"):
        pretrain(config, images, tmp_path / "run", torch.device("cpu"), name="models.rot")
    assert not (tmp_path / "run" / "checkpoint.pth").exists()
    with pytest.raises(ConfigError, match="resources.data_workers"):
        monkeypatch.setattr(distributed, "world_size", lambda: 1)
        pretrain(config, images, tmp_path / "run", torch.device("cpu"), name="models.rot", data_workers=-1)


def test_pretraining_with_2_workers_gives_the_weights_of_0_workers(tmp_path):
    from ssl_challenge.stages.pretraining import train as pretrain
    from ssl_challenge.models.backbones import read_model_file

    images = PreloadedImages(torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8,
                                           generator=torch.Generator().manual_seed(1)), crop_size=10, crop_padding=1)
    config = {"method": "rot", "backbone": {"name": "small_resnet", "widths": [4, 4, 4, 4]}, "epochs": 2,
              "batch_size": 8, "optimizer": {"lr": 0.05}}
    weights = []
    for workers in (0, 2):
        path = pretrain(config, images, tmp_path / f"workers_{workers}", torch.device("cpu"), log=lambda _: None,
                        data_workers=workers)
        weights.append(read_model_file(path)["backbone"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def rows_and_total(table: torch.Tensor, request: tuple[int, int]) -> dict:
    """A batch of another kind (a module-level ``make``): a dict holding a list of tensors."""
    rows = [table[index] for index in range(*request)]
    return {"rows": rows, "total": torch.stack(rows).sum(0)}


def test_any_request_type_with_its_make_function_and_the_global_rng_left_alone():
    table = torch.arange(24.0).reshape(8, 3)
    requests = [(0, 3), (3, 4), (4, 8)]
    made = {}
    for workers in (0, 2):
        torch.manual_seed(11)
        made[workers] = list(load_batches(table, requests, workers=workers, make=rows_and_total))
        after = torch.rand(4)  # the DataLoader seeds its workers from its own generator, not the caller's stream
        torch.manual_seed(11)
        assert torch.equal(after, torch.rand(4))
    for batch, expected, (start, stop) in zip(made[2], made[0], requests):
        assert len(batch["rows"]) == stop - start and torch.equal(batch["total"], table[start:stop].sum(0))
        assert all(torch.equal(a, b) for a, b in zip(batch["rows"], expected["rows"]))
