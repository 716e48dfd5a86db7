"""Feature extraction (uint8 tensors and image sources), and the atomic .npz round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_challenge.stages import features as features_module
from ssl_challenge.stages.features import (IMAGENET_MEAN_STD, extract_features, load_features, normalise_uint8,
                                    save_features)
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.pooling import pool_features, pooling_plan

torch.set_num_threads(1)
LAYERS = ["feat2", "feat5"]


@pytest.fixture(scope="module")
def backbone_and_plan():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 16, 16]})
    return backbone, pooling_plan(backbone, 16, 64)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (11, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


class TensorSource:
    """The ``load_batch`` interface of ssl_challenge.data.images, over a uint8 tensor."""

    def __init__(self, images):
        self.images, self.calls = images, []

    def __len__(self):
        return len(self.images)

    def load_batch(self, indices, augment=False, generator=None):
        self.calls.append((len(indices), augment))
        return normalise_uint8(self.images[indices])


def test_extraction_matches_a_manual_forward_for_any_batch_size(backbone_and_plan, images):
    backbone, plan = backbone_and_plan
    backbone.train()
    with torch.no_grad():
        expected = pool_features(backbone.eval()(normalise_uint8(images, IMAGENET_MEAN_STD)), plan, LAYERS)
    backbone.train()
    running_var = backbone.stem[1].running_var.clone()
    for batch_size in (4, 11, 64):
        features = extract_features(backbone, images, LAYERS, plan, batch_size, "cpu")
        assert set(features) == set(LAYERS)
        for layer in LAYERS:
            assert features[layer].dtype == np.float32 and features[layer].shape == (11, plan[layer]["dim"])
            np.testing.assert_allclose(features[layer], expected[layer].numpy(), rtol=1e-4, atol=1e-5)
    assert backbone.training  # eval during extraction, the caller's mode restored
    torch.testing.assert_close(backbone.stem[1].running_var, running_var)


def test_extraction_from_an_image_source_without_augmentation(backbone_and_plan, images):
    backbone, plan = backbone_and_plan
    source = TensorSource(images)
    from_source = extract_features(backbone, source, LAYERS, plan, 5, "cpu")
    from_tensor = extract_features(backbone, images, LAYERS, plan, 5, "cpu")
    assert source.calls == [(5, False), (5, False), (1, False)]
    for layer in LAYERS:
        np.testing.assert_array_equal(from_source[layer], from_tensor[layer])


def test_extraction_rejects_bad_inputs(backbone_and_plan, images):
    backbone, plan = backbone_and_plan
    with pytest.raises(KeyError, match="feat9"):
        extract_features(backbone, images, ["feat9"], plan, 4, "cpu")
    with pytest.raises(TypeError, match="uint8"):
        extract_features(backbone, images.float(), LAYERS, plan, 4, "cpu")


def test_save_and_load_round_trip(tmp_path):
    features = {"feat4": np.arange(12, dtype=np.float32).reshape(3, 4), "feat5": np.ones((3, 2), np.float64)}
    metadata = {"backbone_config": {"name": "small_resnet"}, "pooling_plan": {"feat4": {"dim": 4}},
                "input_size": 64}
    path = tmp_path / "model" / "voc07_test.npz"
    save_features(path, features, metadata)
    assert sorted(p.name for p in path.parent.iterdir()) == ["voc07_test.npz"]  # no temporary left behind
    loaded, loaded_metadata = load_features(path)
    numerics = loaded_metadata.pop("numerics")  # what decides bit-reproducibility (ssl_challenge.core.numerics)
    assert {"deterministic", "numpy", "torch", "torch_threads", "cpu"} <= set(numerics)
    assert loaded_metadata == {**metadata, "layers": ["feat4", "feat5"], "num_images": 3}
    np.testing.assert_array_equal(loaded["feat4"], features["feat4"])
    assert loaded["feat5"].dtype == np.float32
    only, _ = load_features(path, ["feat5"])
    assert list(only) == ["feat5"]
    with pytest.raises(KeyError, match=r"voc07_test\.npz.*feat3"):
        load_features(path, ["feat3", "feat5"])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_features(tmp_path / "missing.npz")


def test_a_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    def savez_then_die(file, **arrays):
        with open(file, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt  # a kill in the middle of writing

    features = {"feat5": np.zeros((2, 3), np.float32)}
    monkeypatch.setattr(features_module.np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_features(tmp_path / "new.npz", features, {})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    save_features(tmp_path / "old.npz", features, {"version": 1})
    monkeypatch.setattr(features_module.np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_features(tmp_path / "old.npz", {"feat5": np.ones((2, 3), np.float32)}, {"version": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["old.npz"]
    assert load_features(tmp_path / "old.npz")[1]["version"] == 1


def test_save_rejects_inconsistent_inputs(tmp_path):
    with pytest.raises(ValueError, match="different numbers of images"):
        save_features(tmp_path / "f.npz", {"feat4": np.zeros((2, 1)), "feat5": np.zeros((3, 1))}, {})
    with pytest.raises(ValueError, match=r"\.npz"):
        save_features(tmp_path / "f.npy", {"feat5": np.zeros((2, 1))}, {})


def test_extraction_is_bit_identical_to_the_loop_before_the_dataloader(backbone_and_plan, images):
    """The features of the embedded default must not move: the loop as it was before ``engine.inference``
    (normalise each batch on the device, forward, pool, to numpy), written out here, gives the same bits."""
    backbone, plan = backbone_and_plan
    backbone.eval()
    expected = {layer: [] for layer in LAYERS}
    with torch.no_grad():
        for start in range(0, len(images), 4):
            batch = normalise_uint8(images[start:start + 4].to("cpu"), IMAGENET_MEAN_STD)
            pooled = pool_features(backbone(batch), plan, LAYERS)
            for layer in LAYERS:
                expected[layer].append(pooled[layer].float().cpu().numpy())
    backbone.train()
    for workers in (0, 2):
        features = extract_features(backbone, images, LAYERS, plan, 4, "cpu", workers=workers)
        for layer in LAYERS:
            np.testing.assert_array_equal(features[layer], np.concatenate(expected[layer]))


def test_streamed_decoding_with_workers_gives_the_features_of_the_preloaded_split(backbone_and_plan, tmp_path):
    from PIL import Image

    from ssl_challenge.data.decoding import load_image_tensor
    from ssl_challenge.data.images import FeatureImages

    backbone, plan = backbone_and_plan
    generator = np.random.default_rng(0)
    paths = []
    for index in range(7):
        paths.append(tmp_path / f"image_{index}.jpg")
        Image.fromarray(generator.integers(0, 256, (20 + 3 * index, 22, 3), dtype=np.uint8)).save(paths[-1])
    preloaded = extract_features(backbone, load_image_tensor(paths, 18, 16, progress=False), LAYERS, plan, 3, "cpu")
    streamed = extract_features(backbone, FeatureImages(paths, 18, 16), LAYERS, plan, 3, "cpu", workers=2)
    for layer in LAYERS:
        np.testing.assert_array_equal(streamed[layer], preloaded[layer])
