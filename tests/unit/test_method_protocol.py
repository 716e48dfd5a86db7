"""The method Protocol (methods/base.py) declares every hook the training loop calls, and every registered method
satisfies it: the engine calls hooks without asking whether a method has them."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_challenge
from ssl_challenge.clustering.labels import save_labels
from ssl_challenge.methods import METHODS, build_method
from ssl_challenge.methods.base import PlainOrderMethod, PretrainingMethod
from ssl_challenge.models.backbones import build_backbone

ENGINE = Path(ssl_challenge.__file__).parent / "engine"
NUM_SAMPLES, NUM_CLUSTERS = 24, 3


def engine_method_attributes() -> set[str]:
    """The attributes the engine's modules read from a method: ``method.X`` and ``<anything>.method.X``."""
    found = set()
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                    (isinstance(node.value, ast.Name) and node.value.id == "method")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "method")):
                found.add(node.attr)
    return found


def protocol_members() -> set[str]:
    return ({name for name in vars(PretrainingMethod) if not name.startswith("_")}
            | set(PretrainingMethod.__annotations__))


def test_the_protocol_declares_exactly_the_hooks_the_engine_calls():
    hooks = engine_method_attributes() - set(dir(torch.nn.Module))  # nn.Module's own: to, train, state_dict...
    assert hooks == protocol_members() == {"backbone", "parameter_groups", "before_epoch", "epoch_indices",
                                           "training_step", "after_step", "epoch_record"}


def method_options(name: str, labels_path: str) -> dict:
    clustering = {"num_clusters": NUM_CLUSTERS, "min_cluster_size": 1, "neck_hidden_dim": 8, "neck_out_dim": 4}
    return {
        "random": {}, "rot": {},
        "dc": {"num_clusters": NUM_CLUSTERS, "pca_dims": 4},
        "odc": clustering,
        "cls": {"labels_path": labels_path, "num_clusters": NUM_CLUSTERS, "label_models": ["dc", "rot"]},
        "codc": {"base_method": "rot", "labels_path": labels_path, **clustering},
    }[name]


@pytest.fixture(scope="module")
def labels_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "labels.npz"
    save_labels(path, np.arange(NUM_SAMPLES) % NUM_CLUSTERS, {"models": ["dc", "rot"], "num_clusters": NUM_CLUSTERS})
    return str(path)


@pytest.mark.parametrize("name", [name for name in METHODS if name != "external"])  # external is never built
def test_every_registered_method_satisfies_the_protocol(name, labels_path):
    backbone = build_backbone({"name": "small_resnet", "widths": [4, 4, 4, 4]})
    method = build_method(name, backbone, method_options(name, labels_path), NUM_SAMPLES)
    assert isinstance(method, PretrainingMethod)
    assert method.backbone is backbone
    if name in ("random", "rot", "cls"):  # nothing to add to an epoch's metrics line
        assert method.epoch_record() == {}
    if name == "codc":  # the base's record (ROT: none) and the memory's cluster sizes, before any epoch
        assert method.epoch_record() == {"online_cluster_sizes": [0] * NUM_CLUSTERS}


def test_a_module_without_an_epoch_record_is_not_a_method():
    class NoRecord(torch.nn.Module):
        backbone = None

        def parameter_groups(self, base):
            return []

        def before_epoch(self, context):
            pass

        def epoch_indices(self, context):
            return torch.arange(1)

        def training_step(self, images, indices):
            return images.sum(), {}

        def after_step(self, indices):
            return {}

    assert not isinstance(NoRecord(), PretrainingMethod)
    assert PlainOrderMethod().epoch_record() == {}
    assert isinstance(type("WithRecord", (NoRecord,), {"epoch_record": lambda self: {}})(), PretrainingMethod)
