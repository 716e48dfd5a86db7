"""DC: per-epoch clustering into pseudo-labels, the head re-initialised every epoch, uniform sampling over
clusters, the exact state round trip, and interrupted training runs (DC and ODC) that resume exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_challenge.clustering.kmeans import kmeans, mixed_seed
from ssl_challenge.clustering.pca import pca_whiten_normalise
from ssl_challenge.core.config import ConfigError
from ssl_challenge.methods import dc
from ssl_challenge.methods.base import EpochContext, PretrainingMethod

torch.set_num_threads(1)
CPU = torch.device("cpu")
OPTIONS = {"num_clusters": 10, "pca_dims": 16}


class TinyBackbone(nn.Module):
    def __init__(self, out_dim=64):
        super().__init__()
        self.out_dim = out_dim
        self.projection = nn.Linear(48, out_dim)

    def pooled(self, images):
        return self.projection(images.flatten(1))


def tiny_images(count=80):
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(10, 48, generator=generator)  # 10 separable groups of images
    return (centres.repeat(count // 10, 1) + 0.3 * torch.randn(count, 48, generator=generator)).view(count, 3, 4, 4)


def context(images, epoch=0):
    def extract(fn):
        with torch.no_grad():
            return fn(images)

    return EpochContext(epoch, len(images), CPU, torch.Generator().manual_seed(epoch), extract)


def build(options=OPTIONS, count=80):
    torch.manual_seed(0)
    return dc.build(TinyBackbone(), dict(options), count)


def train(method, images, order, steps=4):
    optimizer = torch.optim.SGD(method.parameter_groups({}), lr=0.5)
    for step in range(steps):
        batch = order[step * 16 : (step + 1) * 16]
        loss, _ = method.training_step(images[batch], batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(batch)


def test_labels_are_kmeans_of_the_whitened_features():
    images = tiny_images()
    method = build()
    assert isinstance(method, PretrainingMethod)
    method.before_epoch(context(images))
    with torch.no_grad():
        features = method.backbone.pooled(images)
    seed = mixed_seed(torch.Generator().manual_seed(0), 0)
    expected = kmeans(pca_whiten_normalise(features, 16), 10, 20, seed=seed).assignments
    assert torch.equal(method.labels, expected)
    assert bool(method.clustered)


def test_head_is_reinitialised_every_epoch():
    images = tiny_images()
    method = build({**OPTIONS, "num_clusters": 20})
    method.before_epoch(context(images))
    first_head = method.head.weight.detach().clone()
    train(method, images, method.epoch_indices(context(images)))
    trained = method.head.weight.detach().clone()
    assert not torch.equal(trained, first_head)
    method.before_epoch(context(images, epoch=1))
    weight = method.head.weight.detach()
    assert not torch.equal(weight, trained) and not torch.equal(weight, first_head)
    assert float(weight.std()) == pytest.approx(0.01, rel=0.15)  # 20 x 64 draws of N(0, 0.01^2)
    assert float(weight.mean()).__abs__() < 0.002
    assert torch.equal(method.head.bias.detach(), torch.zeros(20))


def test_epoch_order_is_uniform_over_clusters():
    images = tiny_images()
    method = build()
    method.before_epoch(context(images))
    order = method.epoch_indices(context(images))
    assert order.shape == (80,)
    drawn = torch.bincount(method.labels[order], minlength=10)
    present = torch.bincount(method.labels, minlength=10) > 0
    assert int(drawn[present].max() - drawn[present].min()) <= 1 and int(drawn[~present].sum()) == 0
    with pytest.raises(RuntimeError, match="before_epoch"):
        build().epoch_indices(context(images))


def test_parameter_groups_give_the_head_no_momentum():
    method = build()
    groups = method.parameter_groups({"lr": 0.1, "momentum": 0.9})
    assert groups[1]["momentum"] == 0.0 and {id(p) for p in groups[1]["params"]} == {
        id(p) for p in method.head.parameters()}
    assert sum(len(group["params"]) for group in groups) == len(list(method.parameters()))


def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown key"):
        build({"clusters": 4})
    with pytest.raises(ValueError, match="num_clusters"):
        build({"num_clusters": 81})
    assert dc.DCOptions().pca_dims == 256 and dc.DCOptions().kmeans_iterations == 20


def test_state_dict_round_trip_keeps_labels_and_head():
    images = tiny_images()
    method = build()
    method.before_epoch(context(images))
    train(method, images, method.epoch_indices(context(images)), steps=2)
    state = {key: value.clone() for key, value in method.state_dict().items()}
    assert "labels" in state and "clustered" in state
    fresh = build()
    fresh.load_state_dict(state, strict=True)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    # The restored method continues the epoch without clustering again: same order from the same generator.
    assert torch.equal(fresh.epoch_indices(context(images)), method.epoch_indices(context(images)))


# ------------------------------------------------------------------------------------------------ with the loop
def loop_images(count=96):
    from ssl_challenge.data.images import PreloadedImages

    pixels = torch.randint(0, 256, (count, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return PreloadedImages(pixels, crop_size=16, crop_padding=2)


def loop_config(method: str, options: dict) -> dict:
    return {"method": method, "backbone": {"name": "small_resnet", "widths": [8, 8, 8, 8]}, "epochs": 2,
            "batch_size": 16, "optimizer": {"lr": 0.05}, "checkpoint_every": 2, "method_options": options}


def assert_resume_is_exact(tmp_path, method: str, options: dict, stop_at: int):
    """A run stopped after ``stop_at`` iterations and resumed ends with the weights and the method state
    (labels, memory, heads) of an uninterrupted run."""
    from ssl_challenge.stages.pretraining import train as pretrain  # builds the method, then runs the loop

    config = loop_config(method, options)
    quiet = lambda _message: None  # noqa: E731
    reference = pretrain(config, loop_images(), tmp_path / "reference", CPU, log=quiet)
    assert pretrain(config, loop_images(), tmp_path / "resumed", CPU, log=quiet,
                    stop_after_iterations=stop_at) is None
    resumed = pretrain(config, loop_images(), tmp_path / "resumed", CPU, log=quiet)
    for name in ("model.pth", "checkpoint.pth"):  # the final backbone; the method state after the last epoch
        first = torch.load(reference.parent / name, weights_only=True)
        second = torch.load(resumed.parent / name, weights_only=True)
        first, second = (first["backbone"], second["backbone"]) if name == "model.pth" else (
            first["method"], second["method"])
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)
    return torch.load(reference.parent / "checkpoint.pth", weights_only=True)["method"]


def epoch_records(run_dir):
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records if r["kind"] == "epoch"]


@pytest.mark.parametrize("stop_at", [3, 8])  # mid-epoch 1, mid-epoch 2 (6 iterations per epoch)
def test_interrupted_dc_run_resumes_exactly(tmp_path, stop_at):
    state = assert_resume_is_exact(tmp_path, "dc", {"num_clusters": 4, "pca_dims": 8}, stop_at)
    assert bool(state["clustered"]) and state["labels"].shape == (96,)
    # The per-epoch records (cluster sizes, NMI with the previous clustering) are the same after a resume.
    reference, resumed = epoch_records(tmp_path / "reference"), epoch_records(tmp_path / "resumed")
    assert reference == resumed and len(reference) == 2
    assert reference[0]["nmi_previous"] is None and 0.0 <= reference[1]["nmi_previous"] <= 1.0
    assert [sum(r["cluster_sizes"]) for r in reference] == [96, 96]
    assert reference[1]["cluster_sizes"] == torch.bincount(state["labels"], minlength=4).tolist()


def test_epoch_record_gives_cluster_sizes_and_nmi_with_the_previous_clustering(capsys):
    from ssl_challenge.clustering.agreement import normalized_mutual_information

    images = tiny_images()
    method = build()
    assert method.epoch_record() == {}  # nothing clustered yet
    method.before_epoch(context(images))
    first_labels = method.labels.clone()
    record = method.epoch_record()
    assert record["nmi_previous"] is None
    assert record["cluster_sizes"] == torch.bincount(first_labels, minlength=10).tolist()
    assert sum(record["cluster_sizes"]) == 80
    train(method, images, method.epoch_indices(context(images)))
    method.before_epoch(context(images, epoch=1))
    record = method.epoch_record()
    expected = normalized_mutual_information(first_labels.numpy(), method.labels.numpy())
    assert record["nmi_previous"] == pytest.approx(expected) and 0.0 < record["nmi_previous"] <= 1.0
    restored = build()  # the record survives a checkpoint (both clusterings are buffers)
    restored.load_state_dict(method.state_dict())
    assert restored.epoch_record() == record
    printed = capsys.readouterr().out
    assert "feature pass over 80 images" in printed and "features reduced to 16 dims" in printed
    assert "k-means, 10 clusters, 20 iterations, objective" in printed
