"""CODC member: initial labels from peers or self, loss composition, strict state round trip, exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_challenge.clustering.labels import save_labels
from ssl_challenge.core.config import ConfigError
from ssl_challenge.engine.run_control import derived_seed
from ssl_challenge.engine.train import feature_extractor
from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs engine.train.pretrain
from ssl_challenge.methods import build_method
from ssl_challenge.methods.base import EpochContext
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.stages.pseudo_labels import cluster_concatenated, pooled_features

from engine.worker import tiny_config, tiny_images  # tests/ is on sys.path (conftest.py's folder)

torch.set_num_threads(1)
CPU = torch.device("cpu")
NUM_SAMPLES, NUM_CLUSTERS = 96, 4
BACKBONE = {"name": "small_resnet", "widths": [8, 8, 8, 8]}
DC_BASE = {"base_method": "dc", "base_options": {"num_clusters": 4, "pca_dims": 4}}


def new_backbone(seed: int):
    torch.manual_seed(seed)
    return build_backbone(BACKBONE)


def save_model(backbone, path):
    torch.save({"backbone_config": backbone.config, "backbone": backbone.state_dict()}, path)
    return str(path)


def labels_from(backbones, path, images):
    blocks = [pooled_features(backbone, images, 32, CPU) for backbone in backbones]
    labels = cluster_concatenated(blocks, NUM_CLUSTERS, pca_dims=4, seed=0)
    assert np.bincount(labels, minlength=NUM_CLUSTERS).min() >= 1  # no small cluster for the memory to fix
    save_labels(path, labels, {"num_clusters": NUM_CLUSTERS})
    return str(path), labels


def member_options(labels_path, base_method="rot", **overrides):
    return {"base_method": base_method, "labels_path": labels_path, "num_clusters": NUM_CLUSTERS,
            "min_cluster_size": 1, "neck_hidden_dim": 16, "neck_out_dim": 8, **overrides}


def first_epoch(method, images):
    extract = feature_extractor(images, len(images), 32, CPU, method)
    return EpochContext(0, len(images), CPU, torch.Generator().manual_seed(derived_seed(0, 0)), extract)


@pytest.fixture(scope="module")
def images():
    return tiny_images(NUM_SAMPLES)


@pytest.fixture
def peer_labels(tmp_path, images):
    return labels_from([new_backbone(1), new_backbone(2)], tmp_path / "peers.npz", images)


@pytest.mark.parametrize("label_source", ["peers", "self"])
def test_memory_starts_from_the_given_labels(tmp_path, images, label_source):
    own = new_backbone(3)
    weights = save_model(own, tmp_path / "previous_round.pth")
    peers = [new_backbone(1), new_backbone(2)] if label_source == "peers" else [own]
    labels_path, labels = labels_from(peers, tmp_path / "labels.npz", images)
    method = build_method("codc", new_backbone(4), member_options(labels_path, initial_weights=weights),
                          NUM_SAMPLES)
    for key, value in own.state_dict().items():  # the member continues from its previous round
        assert torch.equal(method.backbone.state_dict()[key], value), key
    assert not method.clustering.is_initialised
    method.before_epoch(first_epoch(method, images))
    assert method.clustering.is_initialised
    assert method.clustering.labels.tolist() == labels.tolist()
    # The memory holds the member's own normalised neck features (eval mode, un-augmented images).
    method.eval()
    with torch.no_grad():
        batch = images.load_batch(torch.arange(NUM_SAMPLES), False, torch.Generator())
        own_features = F.normalize(method.clustering.neck(method.backbone.pooled(batch)), dim=1)
    torch.testing.assert_close(method.clustering.samples_memory, own_features)
    samples_before = method.clustering.samples_memory.clone()
    method.before_epoch(first_epoch(method, images))  # a later epoch: never re-initialised
    assert torch.equal(method.clustering.samples_memory, samples_before)


def test_loss_is_base_plus_weighted_online_part(peer_labels, images):
    method = build_method("codc", new_backbone(4), member_options(peer_labels[0], loss_weight=0.5), NUM_SAMPLES)
    method.before_epoch(first_epoch(method, images))
    method.train()
    batch = images.load_batch(torch.arange(8), True, torch.Generator().manual_seed(5))
    indices = torch.tensor([0, 5, 9, 14, 20, 33, 47, 90])
    torch.manual_seed(11)  # the neck's dropout draws from the global RNG, as in the loop
    loss, logs = method.training_step(batch, indices)
    torch.manual_seed(11)
    base_loss, _ = method.base.training_step(batch, indices)
    online_loss = method.clustering.loss(method.backbone.pooled(batch), indices)
    torch.testing.assert_close(loss, base_loss + 0.5 * online_loss)
    assert logs["base_loss"] == pytest.approx(float(base_loss.detach())) and "rotation_accuracy" in logs
    assert logs["online_loss"] == pytest.approx(float(online_loss.detach()))
    logs = method.after_step(indices)
    assert set(logs) >= {"online_label_change_ratio", "online_small_clusters"}


def test_state_dict_round_trip_restores_memory_and_labels(peer_labels, images):
    method = build_method("codc", new_backbone(4), member_options(peer_labels[0], **DC_BASE), NUM_SAMPLES)
    context = first_epoch(method, images)
    method.before_epoch(context)
    order = method.epoch_indices(context)
    indices = order[:16]
    method.training_step(images.load_batch(indices, True, torch.Generator().manual_seed(0)), indices)
    method.after_step(indices)  # the memory has moved away from its initial state
    state = method.state_dict()
    assert not any(key.startswith("backbone.") for key in state)  # the backbone is stored once, under base.
    restored = build_method("codc", new_backbone(9), member_options(peer_labels[0], **DC_BASE),
                            NUM_SAMPLES)
    restored.load_state_dict(state, strict=True)
    assert restored.clustering.is_initialised
    for name in ("samples_memory", "labels", "centroids", "cluster_sizes", "loss_weights"):
        assert torch.equal(getattr(restored.clustering, name), getattr(method.clustering, name)), name
    assert torch.equal(restored.initial_labels, torch.from_numpy(peer_labels[1]))
    assert torch.equal(restored.base.labels, method.base.labels)  # the base's own state (DC's labels) too


def test_build_names_wrong_options(peer_labels):
    with pytest.raises(ValueError, match="method_options.base_method: expected one of"):
        build_method("codc", new_backbone(0), member_options(peer_labels[0], base_method="codc"), NUM_SAMPLES)
    with pytest.raises(ValueError, match="method_options.labels_path"):
        build_method("codc", new_backbone(0), member_options(""), NUM_SAMPLES)
    with pytest.raises(ValueError, match="labels of 4 clusters, expected num_clusters 5"):
        build_method("codc", new_backbone(0), member_options(peer_labels[0], num_clusters=5), NUM_SAMPLES)
    with pytest.raises(ConfigError, match=r"method_options.base_options \(base_method 'rot'\): .*head_std"):
        build_method("codc", new_backbone(0), member_options(peer_labels[0], base_options={"head_std": 1.0}),
                     NUM_SAMPLES)


def test_tiny_run_resumes_exactly(peer_labels, images, tmp_path):
    config = tiny_config("codc", epochs=2, method_options=member_options(peer_labels[0], **DC_BASE))
    reference = pretrain(config, images, tmp_path / "reference", CPU, log=lambda _: None)
    assert pretrain(config, images, tmp_path / "resumed", CPU, log=lambda _: None, stop_after_iterations=4) is None
    resumed = pretrain(config, images, tmp_path / "resumed", CPU, log=lambda _: None)
    first = torch.load(reference, weights_only=True)["backbone"]
    second = torch.load(resumed, weights_only=True)["backbone"]
    assert all(torch.equal(first[key], second[key]) for key in first)
    records = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert {"online_loss", "base_loss", "online_label_change_ratio"} <= set(records[-1])
    epoch = records[-1]  # the epoch record: the DC base's clustering and the memory's cluster sizes
    assert epoch["kind"] == "epoch" and 0.0 <= epoch["nmi_previous"] <= 1.0
    assert sum(epoch["online_cluster_sizes"]) == sum(epoch["cluster_sizes"]) == len(images)
