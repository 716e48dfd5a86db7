"""The linear probe: BatchNorm-without-affine heads, the schedule, determinism, cached and online feeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_challenge.core.config import ConfigError, from_dict
from ssl_challenge.evaluation.linear_probe import (LinearProbeConfig, PerChannelBatchNorm, build_probe_heads,
                                                    channel_blocks_of, probe_parameter_groups,
                                                    train_linear_probe_on_features)
from ssl_challenge.stages.online_probe import train_linear_probe_online
from ssl_challenge.stages.features import normalise_uint8
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.models.pooling import pooling_plan

torch.set_num_threads(1)


def blobs(num_samples: int, seed: int, num_classes: int = 3, dim: int = 20):
    """``feat4``: linearly separable class blobs (large offset on a shifted scale); ``feat5``: pure noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    centres = np.random.default_rng(123).normal(size=(num_classes, dim)) * 4.0
    separable = 50.0 + 10.0 * (centres[labels] + rng.normal(size=(num_samples, dim)))
    noise = rng.normal(size=(num_samples, 7))
    return {"feat4": separable.astype(np.float32), "feat5": noise.astype(np.float32)}, labels


SMALL = LinearProbeConfig(epochs=4, milestones=(2, 3), batch_size=64)


def test_probe_reaches_high_accuracy_on_separable_features():
    train, train_labels = blobs(641, seed=0)  # 641 = 10 x 64 + 1: the trailing batch of one is dropped
    val, val_labels = blobs(300, seed=1)
    result = train_linear_probe_on_features(train, train_labels, val, val_labels, SMALL, "cpu", seed=0)
    assert result["top1"]["feat4"] > 95.0
    assert result["top1"]["feat5"] < 60.0
    assert result["best_layer"] == "feat4" and result["best_top1"] == result["top1"]["feat4"]
    assert result["num_classes"] == 3 and result["num_train"] == 641 and result["num_val"] == 300
    log = result["epochs_log"]
    assert [record["epoch"] for record in log] == [1, 2, 3, 4]
    assert [record["lr"] for record in log] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert log[-1]["val_top1"] == result["top1"]
    assert log[-1]["train_loss"]["feat4"] < log[0]["train_loss"]["feat4"]


def test_probe_is_deterministic_for_a_seed():
    train, train_labels = blobs(200, seed=0)
    val, val_labels = blobs(100, seed=1)
    config = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=32)
    first, second, other = (train_linear_probe_on_features(train, train_labels, val, val_labels, config, "cpu", seed)
                            for seed in (5, 5, 6))
    predictions = first.pop("val_predictions"), second.pop("val_predictions")
    assert first == second and np.array_equal(*predictions)
    assert first["epochs_log"][0]["train_loss"] != other["epochs_log"][0]["train_loss"]


def test_val_predictions_are_the_best_layers_and_give_its_top1():
    train, train_labels = blobs(200, seed=0)
    val, val_labels = blobs(100, seed=1)
    config = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=32)
    result = train_linear_probe_on_features(train, train_labels, val, val_labels, config, "cpu", 5)
    predictions = result["val_predictions"]
    assert result["best_layer"] == "feat4" and predictions.shape == (100,) and predictions.dtype == np.int64
    assert 100.0 * float((predictions == np.asarray(val_labels)).mean()) == pytest.approx(result["top1"]["feat4"])


def test_heads_are_batchnorm_without_affine_then_linear():
    heads = build_probe_heads({"feat3": 6, "feat5": 4}, num_classes=5, generator=torch.Generator().manual_seed(0),
                              channel_blocks={"feat3": [(2, 6)]})
    for layer, dim, channels in (("feat3", 6, 2), ("feat5", 4, 4)):  # feat5 without a layout: per dimension
        norm, linear = heads[layer]
        assert isinstance(norm, PerChannelBatchNorm) and norm.dim == dim
        (batchnorm,) = norm.norms
        assert not batchnorm.affine and batchnorm.num_features == channels and batchnorm.momentum == 0.1
        assert list(norm.parameters()) == []
        assert (linear.in_features, linear.out_features) == (dim, 5)
        assert bool((linear.bias == 0).all())
    groups = probe_parameter_groups(heads, weight_decay=1e-4)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def test_parameter_groups_exempt_normalisation_layers_from_weight_decay():
    module = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2))
    decayed, exempt = probe_parameter_groups(module, weight_decay=1e-4)
    assert exempt["weight_decay"] == 0.0 and {id(p) for p in exempt["params"]} == {id(module[0].weight),
                                                                                    id(module[0].bias)}
    assert {id(p) for p in decayed["params"]} == {id(module[1].weight), id(module[1].bias)}


def test_config_defaults_and_validation():
    config = from_dict(LinearProbeConfig, {"epochs": 28, "milestones": [7, 14, 21]}, where="probe")
    assert config == LinearProbeConfig(28, (7, 14, 21), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                       nesterov=True, batch_size=256)
    with pytest.raises(ConfigError, match="probe: unknown key"):
        from_dict(LinearProbeConfig, {"epochs": 2, "milestones": [], "gamma": 0.1}, where="probe")
    with pytest.raises(ValueError, match="milestones"):
        LinearProbeConfig(epochs=5, milestones=(3, 2))
    with pytest.raises(ValueError, match="labels"):
        train, labels = blobs(10, seed=0)
        train_linear_probe_on_features(train, labels[:5], train, labels, SMALL, "cpu", seed=0)


class BrightnessSource:
    """A tiny image source: class 1 images are bright, class 0 dark; augmentation is a seeded flip."""

    def __init__(self, num_images: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (num_images,), generator=generator)
        base = torch.randint(0, 100, (num_images, 3, 12, 12), generator=generator, dtype=torch.uint8)
        self.images = base + (self.labels * 150).to(torch.uint8).view(-1, 1, 1, 1)
        self.augment_flags = []

    def __len__(self):
        return len(self.images)

    def load_batch(self, indices, augment=False, generator=None):
        self.augment_flags.append(augment)
        batch = normalise_uint8(self.images[indices])
        if augment and bool(torch.rand(1, generator=generator) < 0.5):
            batch = batch.flip(3)
        return batch


def test_online_probe_trains_through_a_frozen_trunk():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]}).train()
    plan = pooling_plan(backbone, 12, 32)
    state_before = {key: value.clone() for key, value in backbone.state_dict().items()}
    train_source, val_source = BrightnessSource(96, seed=0), BrightnessSource(40, seed=1)
    config = LinearProbeConfig(epochs=3, milestones=(2,), batch_size=32)
    result = train_linear_probe_online([backbone], train_source, val_source, train_source.labels, val_source.labels,
                                       ["feat1", "feat5"], [plan], config, "cpu", seed=0)
    assert result["top1"]["feat1"] > 90.0
    assert len(result["epochs_log"]) == 3 and result["best_layer"] in ("feat1", "feat5")
    assert set(train_source.augment_flags) == {True} and set(val_source.augment_flags) == {False}
    assert backbone.training  # the caller's mode is restored
    for key, value in backbone.state_dict().items():  # no weight and no BatchNorm statistic moved
        torch.testing.assert_close(value, state_before[key], rtol=0, atol=0)


def test_per_channel_batchnorm_by_hand():
    # 2 samples, 2 channels x 2 positions, C-major: channel 0 holds {1, 2, 5, 6}, channel 1 {3, 4, 7, 8}.
    features = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    norm = PerChannelBatchNorm([(2, 4)]).train()
    # each channel: mean 3.5 / 5.5, biased variance (2.5^2 + 1.5^2 + 1.5^2 + 2.5^2) / 4 = 4.25
    scale = (4.25 + 1e-5) ** -0.5
    expected = torch.tensor([[-2.5, -1.5, -2.5, -1.5], [1.5, 2.5, 1.5, 2.5]]) * scale
    assert torch.allclose(norm(features), expected, atol=1e-6)
    (batchnorm,) = norm.norms  # momentum 0.1: running mean 0.1 x mean; var 0.9 + 0.1 x unbiased 17/3
    assert batchnorm.running_mean.tolist() == pytest.approx([0.35, 0.55])
    assert batchnorm.running_var.tolist() == pytest.approx([0.9 + 0.1 * 17 / 3] * 2)
    # the same as BatchNorm2d on the [B, C, h, w] map, flattened afterwards
    maps = torch.randn(5, 3, 2, 2)
    reference = nn.BatchNorm2d(3, affine=False, momentum=0.1).train()(maps).flatten(1)
    assert torch.allclose(PerChannelBatchNorm([(3, 12)]).train()(maps.flatten(1)), reference, atol=1e-5)


def test_concatenation_blocks_are_normalised_separately():
    first, second = torch.randn(6, 2 * 4), torch.randn(6, 3 * 1) * 10 + 3
    norm = PerChannelBatchNorm([(2, 8), (3, 3)]).train()
    joined = norm(torch.cat([first, second], dim=1))
    assert torch.allclose(joined[:, :8], PerChannelBatchNorm([(2, 8)]).train()(first), atol=1e-6)
    assert torch.allclose(joined[:, 8:], nn.BatchNorm1d(3, affine=False).train()(second), atol=1e-5)
    with pytest.raises(ValueError, match="not 3 channels"):
        PerChannelBatchNorm([(3, 8)])


def test_channel_blocks_come_from_the_feature_metadata():
    plan = {"feat4": {"channels": 32, "dim": 2048}, "feat5": {"channels": 64, "dim": 1024}}
    assert channel_blocks_of({"pooling_plan": plan}, ["feat4"]) == {"feat4": [(32, 2048)]}
    concatenation = {"member_dims": {"feat5": [1024, 2048]}, "member_channels": {"feat5": [64, 2048]}}
    assert channel_blocks_of({"concatenation": concatenation}, ["feat5"]) == {"feat5": [(64, 1024), (2048, 2048)]}
    assert channel_blocks_of({"concatenation": {"member_dims": {"feat5": [4]}}}, ["feat5"]) == {}


def test_probe_images_follow_the_reference_pipelines(tmp_path):
    from PIL import Image

    from ssl_challenge.data.images import draw_sample_seeds
    from ssl_challenge.data.probe_images import ProbeImages

    pixels = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)  # height 8 = resize_shorter: no resize
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    source = ProbeImages([path], resize_shorter=8, crop_size=6, mean=(0, 0, 0), std=(1 / 255,) * 3)
    # training: CenterCrop 8 keeps columns 2..9; RandomCrop 6 (3 positions) at top int(0.5 x 3) = 1,
    # left int(0.9 x 3) = 2 -> rows 1..6, columns 4..9; coin 0.7: no flip (0.2: flipped)
    for coin, flipped in ((0.7, False), (0.2, True)):
        crop = source.training_crop(path, [0.5, 0.9, coin])
        expected = pixels[1:7, 4:10]
        assert np.array_equal(crop, expected[:, ::-1] if flipped else expected)
    # validation: CenterCrop 6 of the 12 x 8 image: columns 3..8, rows 1..6
    assert np.array_equal(source.validation_crop(path), pixels[1:7, 3:9])
    generator = torch.Generator().manual_seed(0)
    batch = source.load_batch(torch.tensor([0, 0]), augment=True, generator=generator)
    # one seed per sample drawn from the batch's generator, then the sample's own three draws
    seeds = draw_sample_seeds(2, torch.Generator().manual_seed(0))
    draws = [torch.rand(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
             for seed in seeds]
    for image, draw in zip(batch, draws):
        expected = torch.from_numpy(source.training_crop(path, draw).copy()).permute(2, 0, 1).float()
        assert torch.allclose(image, expected, atol=1e-3)


class SeededBrightnessSource(BrightnessSource):
    """Per-sample augmentation (a flip drawn from each sample's seed); optionally sends SIGTERM to this process
    when the ``kill_at``-th augmented batch is made (as SLURM does before a time limit)."""

    def __init__(self, num_images: int, seed: int, kill_at: int | None = None):
        super().__init__(num_images, seed)
        self.kill_at, self.augmented_batches = kill_at, 0

    def load_batch_seeded(self, indices, sample_seeds):
        import os
        import signal

        self.augmented_batches += 1
        if self.augmented_batches == self.kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        batch = normalise_uint8(self.images[indices])
        flips = [bool(torch.rand(1, generator=torch.Generator().manual_seed(seed)) < 0.5) for seed in sample_seeds]
        return torch.stack([image.flip(2) if flip else image for image, flip in zip(batch, flips)])


def online_probe(source, checkpointing, workers=0):

    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]})
    val_source = BrightnessSource(20, seed=1)
    config = LinearProbeConfig(epochs=3, milestones=(2,), batch_size=16)  # 3 iterations per epoch
    return train_linear_probe_online([backbone], source, val_source, source.labels, val_source.labels,
                                     ["feat1", "feat5"], [pooling_plan(backbone, 12, 32)], config, "cpu", seed=3,
                                     checkpointing=checkpointing, workers=workers)


def without_numerics(result):
    """The result to compare: the numerics record left out, the val predictions (an array) as a list."""
    kept = {key: value for key, value in result.items() if key != "numerics"}
    if "val_predictions" in kept:
        kept["val_predictions"] = np.asarray(kept["val_predictions"]).tolist()
    return kept


def test_online_probe_killed_mid_epoch_and_rerun_gives_the_uninterrupted_result(tmp_path):
    import json

    from ssl_challenge.stages.online_probe import ProbeCheckpointing, ProbeStopped

    uninterrupted = online_probe(SeededBrightnessSource(48, seed=0), ProbeCheckpointing(str(tmp_path / "whole")))
    records = [json.loads(line) for line in (tmp_path / "whole" / "epochs.jsonl").read_text().splitlines()]
    assert records == json.loads(json.dumps(uninterrupted["epochs_log"]))  # written as it went
    state = tmp_path / "killed"
    # SIGTERM while batch 5 (epoch 2, iteration 2) is made: the probe finishes that iteration, checkpoints, stops
    with pytest.raises(ProbeStopped, match="SIGTERM received: probe checkpoint written at iteration 5"):
        online_probe(SeededBrightnessSource(48, seed=0, kill_at=5), ProbeCheckpointing(str(state), every=100))
    assert len((state / "epochs.jsonl").read_text().splitlines()) == 1  # epoch 1's record only
    # a simulated kill after a checkpoint at iteration 7 (mid-epoch 3), then the rerun, with 2 loader workers
    assert online_probe(SeededBrightnessSource(48, seed=0),
                        ProbeCheckpointing(str(state), every=1, stop_after_iterations=7)) is None
    rerun = SeededBrightnessSource(48, seed=0)
    resumed = online_probe(rerun, ProbeCheckpointing(str(state), every=2), workers=2)
    assert without_numerics(resumed) == without_numerics(uninterrupted)
    assert rerun.augmented_batches == 0  # batches were made by the workers, and only iterations 8 and 9


def test_online_probe_refuses_the_checkpoint_of_another_probe(tmp_path):
    from ssl_challenge.stages.online_probe import ProbeCheckpointing

    online_probe(SeededBrightnessSource(48, seed=0), ProbeCheckpointing(str(tmp_path), stop_after_iterations=2))
    torch.manual_seed(1)  # another trunk
    backbone = build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]})
    source, val_source = SeededBrightnessSource(48, seed=0), BrightnessSource(20, seed=1)
    with pytest.raises(ValueError, match="checkpoint of another configuration"):
        train_linear_probe_online([backbone], source, val_source, source.labels, val_source.labels, ["feat1", "feat5"],
                                  [pooling_plan(backbone, 12, 32)], LinearProbeConfig(epochs=3, milestones=(2,),
                                                                                    batch_size=16),
                                  "cpu", seed=3, checkpointing=ProbeCheckpointing(str(tmp_path)))


# ------------------------------------------------------------------ a concatenation: the members' trunks together
def member_trunks():
    """Two members of different widths: feat5 maps of 8 and 12 channels, both pooled to 2 x 2; feat1 of 8 channels
    pooled to 2 x 2 and of 4 channels pooled to 3 x 3 (12 px images, pooling target 32)."""
    torch.manual_seed(0)
    trunks = [build_backbone({"name": "small_resnet", "widths": widths}) for widths in ([8, 8, 8, 8], [4, 8, 8, 12])]
    return trunks, [pooling_plan(trunk, 12, 32) for trunk in trunks]


def concatenation_probe(source, checkpointing, members=None):
    trunks, plans = members or member_trunks()
    val_source = BrightnessSource(20, seed=1)
    config = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=16)  # 3 iterations per epoch
    return train_linear_probe_online(trunks, source, val_source, source.labels, val_source.labels, ["feat1", "feat5"],
                                     plans, config, "cpu", seed=3, checkpointing=checkpointing)


def test_a_concatenation_joins_its_members_pooled_maps_along_channels():
    from ssl_challenge.models.pooling import pool_features
    from ssl_challenge.stages.online_probe import joined_features, joined_layout

    trunks, plans = member_trunks()
    dims, blocks = joined_layout(plans, ["feat1", "feat5"])
    assert dims == {"feat1": 8 * 4 + 4 * 9, "feat5": 8 * 4 + 12 * 4}  # the members' dims summed
    assert blocks == {"feat1": [(8, 32), (4, 36)], "feat5": [(8, 32), (12, 48)]}
    images = normalise_uint8(BrightnessSource(6, seed=2).images)
    for trunk in trunks:
        trunk.eval()
    joined = joined_features(trunks, plans, ["feat1", "feat5"], images)
    members = [pool_features(trunk(images), plan, ["feat5"])["feat5"] for trunk, plan in zip(trunks, plans)]
    assert torch.equal(joined["feat5"], torch.cat(members, dim=1))  # member order
    # feat5's maps share their 2 x 2 size: the head's normalisation is BatchNorm2d of the 20-channel map made by
    # joining the members' pooled maps along channels
    maps = torch.cat([members[0].reshape(6, 8, 2, 2), members[1].reshape(6, 12, 2, 2)], dim=1)
    reference = nn.BatchNorm2d(20, affine=False, momentum=0.1).train()(maps).flatten(1)
    assert torch.allclose(PerChannelBatchNorm(blocks["feat5"]).train()(joined["feat5"]), reference, atol=1e-5)
    with pytest.raises(ValueError, match="one pooling plan per trunk"):
        train_linear_probe_online(trunks, BrightnessSource(8, 0), BrightnessSource(4, 1), torch.zeros(8),
                                  torch.zeros(4), ["feat5"], plans[:1], SMALL, "cpu", seed=0)


def test_online_probe_of_a_concatenation_trains_through_the_frozen_members(tmp_path):
    from ssl_challenge.stages.online_probe import ProbeCheckpointing

    trunks, plans = member_trunks()
    trunks[1].eval()
    before = [{key: value.clone() for key, value in trunk.state_dict().items()} for trunk in trunks]
    source = SeededBrightnessSource(48, seed=0)
    result = concatenation_probe(source, ProbeCheckpointing(str(tmp_path / "whole")), (trunks, plans))
    assert set(result["top1"]) == {"feat1", "feat5"} and len(result["epochs_log"]) == 2
    assert result["top1"]["feat1"] > 90.0  # brightness is linearly visible in the joined feat1
    assert result["num_train"] == 48 and result["num_val"] == 20 and len(result["val_predictions"]) == 20
    assert [trunk.training for trunk in trunks] == [True, False]  # each member's mode restored
    for trunk, state in zip(trunks, before):  # no weight and no BatchNorm statistic of either member moved
        for key, value in trunk.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # the heads (from a checkpoint after iteration 1): Linear(summed dims), one BatchNorm per member's channels
    concatenation_probe(SeededBrightnessSource(48, seed=0),
                        ProbeCheckpointing(str(tmp_path / "one"), stop_after_iterations=1))
    heads = torch.load(tmp_path / "one" / "checkpoint.pth", weights_only=False)["method"]
    assert heads["feat5.1.weight"].shape == (2, 80) and heads["feat1.1.weight"].shape == (2, 68)
    assert [heads[f"feat5.0.norms.{index}.running_mean"].shape[0] for index in (0, 1)] == [8, 12]


def test_online_probe_of_a_concatenation_killed_and_rerun_gives_the_uninterrupted_result(tmp_path):
    from ssl_challenge.stages.online_probe import ProbeCheckpointing

    uninterrupted = concatenation_probe(SeededBrightnessSource(48, seed=0), ProbeCheckpointing(str(tmp_path / "a")))
    state = str(tmp_path / "b")
    assert concatenation_probe(SeededBrightnessSource(48, seed=0),
                               ProbeCheckpointing(state, every=1, stop_after_iterations=4)) is None  # mid-epoch 2
    resumed = concatenation_probe(SeededBrightnessSource(48, seed=0), ProbeCheckpointing(state, every=1))
    assert without_numerics(resumed) == without_numerics(uninterrupted)


def test_probe_digest_of_one_trunk_is_unchanged_and_member_order_counts():
    import dataclasses
    import hashlib
    import json

    from ssl_challenge.stages.online_probe import probe_digest

    (first, second), (plan, other_plan) = member_trunks()
    # the single-trunk description written before concatenations were probed online: old checkpoints stay valid
    expected = hashlib.sha256(json.dumps({"config": dataclasses.asdict(SMALL), "seed": 1, "layers": ["feat5"],
                                          "plan": plan, "counts": [4, 2, 2], "evaluate_every": 1},
                                         sort_keys=True, default=str).encode())
    for name, tensor in sorted(first.state_dict().items()):
        expected.update(name.encode())
        expected.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    assert probe_digest([first], SMALL, 1, ["feat5"], [plan], (4, 2, 2), 1) == expected.hexdigest()[:16]
    joined = probe_digest([first, second], SMALL, 1, ["feat5"], [plan, other_plan], (4, 2, 2), 1)
    swapped = probe_digest([second, first], SMALL, 1, ["feat5"], [other_plan, plan], (4, 2, 2), 1)
    assert len({joined, swapped, expected.hexdigest()[:16]}) == 3
