"""NaN and infinity are refused by every reader and consumer of features, labels and probe/SVM inputs, naming the
file (or model) they came from, instead of flowing on to a silently wrong score or a far-away k-means error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_challenge.clustering.labels import read_labels_file
from ssl_challenge.stages.concat import concatenate_feature_files
from ssl_challenge.data.images import PreloadedImages
from ssl_challenge.evaluation.linear_probe import LinearProbeConfig, train_linear_probe_on_features
from ssl_challenge.evaluation.lowshot import draw_lowshot_samples, evaluate_lowshot
from ssl_challenge.evaluation.svm import train_and_test_full_svm
from ssl_challenge.data.feature_files import load_features, save_features
from ssl_challenge.core.finite import NonFiniteError, count_non_finite
from ssl_challenge.models.backbones import build_backbone
from ssl_challenge.stages.pseudo_labels import labels_from_models

CLASSES = ["cat", "dog"]


def features(rows=12, dim=4, seed=0):
    return np.random.default_rng(seed).random((rows, dim)).astype(np.float32)


def with_value(array, value, at=(3, 1)):
    array = array.copy()
    array[at] = value
    return array


def test_count_non_finite_in_blocks(monkeypatch):
    monkeypatch.setattr("ssl_challenge.core.finite.CHUNK_ELEMENTS", 8)  # several blocks of 2 rows
    array = features(rows=9)
    array[0, 0], array[4, 3], array[8, 2] = np.nan, np.inf, -np.inf
    assert count_non_finite(array) == 3
    assert count_non_finite(np.arange(5)) == 0  # integers are always finite


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_feature_files_with_nan_or_inf_are_not_written_and_not_read(tmp_path, value):
    path = tmp_path / "model_feats.npz"
    with pytest.raises(NonFiniteError, match=r"model_feats.npz: features feat5 of model file results/rot.pth: 1 of "
                                             r"48 values are NaN or infinite.*nothing was written"):
        save_features(path, {"feat5": with_value(features(), value)}, {"model": "results/rot.pth"})
    assert not path.exists()
    # A file written by something else (or before this check existed) is refused when read.
    np.savez(path, feat5=with_value(features(), value), metadata=np.array('{"layers": ["feat5"], "num_images": 12}'))
    with pytest.raises(NonFiniteError, match=r"model_feats.npz: features feat5: 1 of 48 values .*extract the "
                                             "features again"):
        load_features(path)


def test_concatenation_refuses_a_member_with_nan(tmp_path):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    save_features(good, {"feat5": features()}, {"split": "s"})
    np.savez(bad, feat5=with_value(features(), np.nan), metadata=np.array('{"layers": ["feat5"], "num_images": 12, '
                                                                           '"split": "s"}'))
    with pytest.raises(NonFiniteError, match="bad.npz: features feat5"):
        concatenate_feature_files([good, bad], tmp_path / "concat.npz")
    assert not (tmp_path / "concat.npz").exists()


def test_linear_probe_refuses_nan_features_and_a_diverging_probe():
    labels = np.arange(12) % 2
    config = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=4)
    with pytest.raises(NonFiniteError, match="linear probe: val features feat5: 1 of 48"):
        train_linear_probe_on_features({"feat5": features()}, labels, {"feat5": with_value(features(), np.nan)},
                                       labels, config, device="cpu", seed=0)
    huge = LinearProbeConfig(epochs=2, milestones=(1,), batch_size=4, lr=1e38)
    with pytest.raises(NonFiniteError, match=r"linear probe: the training loss of \['feat5'\] is NaN or infinite "
                                             r"at epoch \d; lower evaluation.places205_linear.lr"):
        train_linear_probe_on_features({"feat5": features() * 1e30}, labels, {"feat5": features()}, labels, huge,
                                       device="cpu", seed=0)


def voc_labels(rows, seed):
    labels = np.where(np.random.default_rng(seed).random((rows, len(CLASSES))) < 0.5, 1, -1).astype(np.int8)
    labels[:6] = np.array([[1, -1], [-1, 1]] * 3)  # enough positives and negatives for 5-fold CV per class
    return labels


def test_svm_and_lowshot_refuse_non_finite_features():
    train_y, test_y = voc_labels(40, 0), voc_labels(20, 1)
    train_x, test_x = features(40), features(20)
    with pytest.raises(NonFiniteError, match="SVM: test features: 1 of 80"):
        train_and_test_full_svm(train_x, train_y, with_value(test_x, np.inf), test_y, [1.0], CLASSES, n_jobs=1)
    samples = draw_lowshot_samples(train_y, [1], num_samples=1, seed=0)
    with pytest.raises(NonFiniteError, match="low-shot: trainval features: 1 of 160"):
        evaluate_lowshot(with_value(train_x, np.nan), train_y, test_x, test_y, samples, [1.0], CLASSES, n_jobs=1)


def test_pseudo_labels_name_the_model_whose_features_are_not_finite(tmp_path):
    # Finite weights large enough that the activations overflow: the model file itself passes the weight check.
    torch.manual_seed(0)
    backbone = build_backbone({"name": "small_resnet", "widths": [4, 4, 4, 4]})
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.fill_(1e30)
    path = tmp_path / "huge.pth"
    torch.save({"backbone": backbone.state_dict(), "backbone_config": backbone.config}, path)
    pixels = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NonFiniteError, match=f"pseudo-labels: the features of model file {path} .*retrain it"):
        labels_from_models([str(path)], PreloadedImages(pixels), num_clusters=2, pca_dims=2, seed=0, batch_size=5,
                           device=torch.device("cpu"), output=tmp_path / "labels.npz")
    assert not (tmp_path / "labels.npz").exists()


def test_label_files_must_hold_integers(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, labels=np.array([0.0, np.nan, 1.0]), metadata=np.array('{"num_clusters": 2}'))
    with pytest.raises(ValueError, match="labels.npz: labels must be a 1-d integer array, found float64"):
        read_labels_file(path)
