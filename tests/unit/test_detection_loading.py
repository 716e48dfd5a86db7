"""Track 4's detector through the DataLoader: 0 or 2 worker processes give the same weights, metrics and
detections, and a run preempted with workers (the signal reaching the whole process group, as SLURM sends it)
resumes to the weights of an uninterrupted run without workers."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from layouts_fixture import make_tiny_voc07
from ssl_challenge.core.config import ConfigError
from ssl_challenge.detection.data import DetectionRequest, DetectionSet, load_detection_batch
from ssl_challenge.detection.train import detect, train_detector, training_requests
from ssl_challenge.engine.run_control import Preempted
from test_detection import CLASSES, CPU, SOLVER, small_detector


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    make_tiny_voc07(root, CLASSES, n_trainval=6, n_test=4)
    return root


@pytest.fixture(scope="module")
def without_workers(voc_root, tmp_path_factory):
    """The uninterrupted run made in this process: (weights, metrics without timings)."""
    run_dir = tmp_path_factory.mktemp("workers_0")
    detector = small_detector()
    assert train_detector(detector, DetectionSet(voc_root, "trainval", CLASSES), SOLVER, run_dir, CPU, "d",
                          log=lambda _: None, log_every=1, workers=0)
    return detector.state_dict(), metrics_of(run_dir)


def metrics_of(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in line.items() if key != "train_seconds"} for line in lines]


def same_weights(expected: dict, found: dict) -> bool:
    return expected.keys() == found.keys() and all(torch.equal(expected[key], found[key]) for key in expected)


def test_requests_hold_the_images_and_flips_of_each_iteration(voc_root):
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    requests = training_requests(SOLVER, 0, len(dataset))
    assert len(requests) == SOLVER.iterations and all(len(request.indices) == 2 for request in requests)
    assert training_requests(SOLVER, 4, len(dataset)) == requests[4:]  # a resumed run asks for the same batches
    assert any(any(request.flips) for request in requests) and not all(all(r.flips) for r in requests)
    no_flip = training_requests(dataclasses.replace(SOLVER, flip=False), 0, len(dataset))
    assert [r.indices for r in no_flip] == [r.indices for r in requests] and not any(any(r.flips) for r in no_flip)
    flipped = next(request for request in requests if any(request.flips))
    for (image, target), index, flip in zip(load_detection_batch(dataset, flipped), flipped.indices, flipped.flips):
        expected_image, expected_target = dataset.load(index, flip, training=True)
        assert torch.equal(image, expected_image) and torch.equal(target["boxes"], expected_target["boxes"])
    with pytest.raises(ValueError, match="2 images but 1 flips"):
        DetectionRequest((0, 1), (False,), training=True)


def test_training_with_2_workers_gives_the_weights_and_metrics_of_0_workers(voc_root, tmp_path, without_workers):
    weights, metrics = without_workers
    detector = small_detector()
    assert train_detector(detector, DetectionSet(voc_root, "trainval", CLASSES), SOLVER, tmp_path, CPU, "d",
                          log=lambda _: None, log_every=1, workers=2)
    assert same_weights(weights, detector.state_dict())
    assert metrics_of(tmp_path) == metrics and len(metrics) == SOLVER.iterations


def test_detect_with_2_workers_gives_the_detections_of_0_workers(voc_root, without_workers):
    detector = small_detector()
    detector.load_state_dict(without_workers[0])
    test = DetectionSet(voc_root, "test", CLASSES)
    expected = detect(detector, test, CPU, batch_size=3, workers=0)  # batches of 3 and 1
    assert sum(len(rows) for rows in expected.values()) > 0
    assert detect(detector, test, CPU, batch_size=3, workers=2) == expected
    ids = test.image_ids()  # Fast R-CNN: the given boxes join the images made by the workers
    proposals = {image_id: np.array([[1.0, 2, 12, 10], [0, 0, 6, 5]], dtype=np.float32) for image_id in ids}
    fast = small_detector(given_proposals=True)
    expected = detect(fast, test, CPU, batch_size=3, proposals=proposals, workers=0)
    assert sum(len(rows) for rows in expected.values()) > 0
    assert detect(fast, test, CPU, batch_size=3, proposals=proposals, workers=2) == expected


def worker_processes() -> list[int]:
    """The process ids whose parent is this process (the DataLoader's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.append(int(entry.name))
    return children


def test_preempted_with_2_workers_resumes_to_the_weights_of_0_workers(voc_root, tmp_path, without_workers):
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    signalled = []

    def preempt(message):  # SLURM signals the whole process group: the workers ignore it, this process stops
        if message.startswith("iteration 3/"):
            signalled.extend(worker_processes())
            for pid in signalled + [os.getpid()]:
                os.kill(pid, signal.SIGUSR1)

    with pytest.raises(Preempted, match="SIGUSR1 received: checkpoint written at iteration 3"):
        train_detector(small_detector(), dataset, SOLVER, tmp_path, CPU, "d", log=preempt, log_every=1, workers=2)
    assert len(signalled) == 2
    resumed = small_detector(seed=5)
    messages = []
    assert train_detector(resumed, dataset, SOLVER, tmp_path, CPU, "d", log=messages.append, log_every=1,
                          workers=2)
    assert "resumed from" in messages[0] and "iteration 3" in messages[0]
    assert same_weights(without_workers[0], resumed.state_dict())
    assert metrics_of(tmp_path) == without_workers[1]


def test_bad_worker_count_is_refused_before_training(voc_root, tmp_path):
    with pytest.raises(ConfigError, match="resources.data_workers: expected an integer >= 0"):
        train_detector(small_detector(), DetectionSet(voc_root, "trainval", CLASSES), SOLVER, tmp_path, CPU, "d",
                       log=lambda _: None, workers=-1)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="resources.data_workers"):
        detect(small_detector(), DetectionSet(voc_root, "test", CLASSES), CPU, workers="2")
