"""CLS: the mixup loss against a hand-computed value, the mixing, label checks, state and a tiny exact-resume run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_challenge.clustering.labels import save_labels
from ssl_challenge.core.config import ConfigError
from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs engine.train.pretrain
from ssl_challenge.methods import build_method
from ssl_challenge.methods.cls import mix_batch, mixup_cross_entropy
from ssl_challenge.models.backbones import build_backbone

from engine.worker import tiny_config, tiny_images  # tests/ is on sys.path (conftest.py's folder)

torch.set_num_threads(1)
CPU = torch.device("cpu")
NUM_SAMPLES, NUM_CLUSTERS = 96, 4


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.npz"
    save_labels(path, np.arange(NUM_SAMPLES) % NUM_CLUSTERS, {"models": ["dc", "rot"], "num_clusters": NUM_CLUSTERS})
    return str(path)


def cls_options(labels_path, **overrides):
    return {"labels_path": labels_path, "num_clusters": NUM_CLUSTERS, "label_models": ["dc", "rot"], **overrides}


def small_backbone():
    return build_backbone({"name": "small_resnet", "widths": [8, 8, 8, 8]})


def test_mixup_cross_entropy_by_hand():
    # Row 1: logits (0, ln 3) -> softmax (1/4, 3/4): CE(class 0) = ln 4, CE(class 1) = ln(4/3).
    # Row 2: logits (0, 0) -> (1/2, 1/2): CE = ln 2 for either class.
    # targets_a = (0, 1): mean CE = (ln 4 + ln 2) / 2 = 1.5 ln 2.
    # targets_b = (1, 0): mean CE = (ln(4/3) + ln 2) / 2 = (3 ln 2 - ln 3) / 2.
    # lam = 0.25: 0.25 * 1.5 ln 2 + 0.75 * (3 ln 2 - ln 3) / 2 = 1.5 ln 2 - 0.375 ln 3 = 0.627741...
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    loss = mixup_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([1, 0]), 0.25)
    assert float(loss) == pytest.approx(1.5 * math.log(2) - 0.375 * math.log(3), abs=1e-6)
    assert float(loss) == pytest.approx(0.627741, abs=1e-6)


def test_mix_batch_mixes_with_a_permutation_from_the_global_rng():
    images = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    mixed, permutation, lam = mix_batch(images, alpha=1.0)
    assert 0.0 < lam < 1.0 and sorted(permutation.tolist()) == list(range(5))
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[permutation])
    torch.manual_seed(7)
    again, same_permutation, same_lam = mix_batch(images, alpha=1.0)
    assert same_lam == lam and torch.equal(same_permutation, permutation) and torch.equal(again, mixed)
    unmixed, identity, one = mix_batch(images, alpha=0.0)
    assert one == 1.0 and identity.tolist() == list(range(5)) and unmixed is images


def test_build_checks_the_label_file(labels_file, tmp_path):
    method = build_method("cls", small_backbone(), cls_options(labels_file), NUM_SAMPLES)
    assert method.labels.tolist() == (np.arange(NUM_SAMPLES) % NUM_CLUSTERS).tolist()
    assert method.head.out_features == NUM_CLUSTERS
    with pytest.raises(ValueError, match="method_options.labels_path"):
        build_method("cls", small_backbone(), cls_options(""), NUM_SAMPLES)
    with pytest.raises(ValueError, match=r"labels.npz: 96 labels, expected one per training sample \(95\)"):
        build_method("cls", small_backbone(), cls_options(labels_file), NUM_SAMPLES - 1)
    with pytest.raises(ValueError, match="labels of 4 clusters, expected num_clusters 5"):
        build_method("cls", small_backbone(), cls_options(labels_file, num_clusters=5), NUM_SAMPLES)
    with pytest.raises(ValueError, match=r"computed from models \['dc', 'rot'\]"):
        build_method("cls", small_backbone(), cls_options(labels_file, label_models=["odc"]), NUM_SAMPLES)
    with pytest.raises(ConfigError, match="method_options: missing required key 'num_clusters'"):
        build_method("cls", small_backbone(), {"labels_path": labels_file}, NUM_SAMPLES)


def test_labels_are_checkpointed_and_the_step_uses_them(labels_file):
    method = build_method("cls", small_backbone(), cls_options(labels_file), NUM_SAMPLES)
    state = method.state_dict()
    assert "labels" in state
    other = build_method("cls", small_backbone(), cls_options(labels_file), NUM_SAMPLES)
    other.labels.zero_()
    other.load_state_dict(state, strict=True)
    assert torch.equal(other.labels, method.labels)

    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    indices = torch.tensor([0, 1, 2, 3, 5, 9])
    torch.manual_seed(3)
    loss, logs = method.training_step(images, indices)
    torch.manual_seed(3)
    mixed, permutation, lam = mix_batch(images, 1.0)
    targets = method.labels[indices]
    expected = mixup_cross_entropy(method.head(method.backbone.pooled(mixed)), targets, targets[permutation], lam)
    torch.testing.assert_close(loss, expected)
    assert logs["mixup_lambda"] == lam


def test_tiny_run_resumes_exactly(labels_file, tmp_path):
    config = tiny_config("cls", epochs=2, method_options=cls_options(labels_file))
    reference = pretrain(config, tiny_images(), tmp_path / "reference", CPU, log=lambda _: None)
    assert pretrain(config, tiny_images(), tmp_path / "resumed", CPU, log=lambda _: None,
                    stop_after_iterations=4) is None
    resumed = pretrain(config, tiny_images(), tmp_path / "resumed", CPU, log=lambda _: None)
    first = torch.load(reference, weights_only=True)["backbone"]
    second = torch.load(resumed, weights_only=True)["backbone"]
    assert all(torch.equal(first[key], second[key]) for key in first)
