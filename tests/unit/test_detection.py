"""Track 4's detector: what is frozen and what trains, given proposals, backbones without the needed stages,
boxes outside the image, coordinates, and a killed-and-resumed training that ends with the same weights."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from layouts_fixture import make_tiny_voc07, write_voc_annotation
from ssl_challenge.detection.data import (DetectionSet, continuous_to_voc, flip_boxes, read_proposals,
                                          voc_to_continuous)
from ssl_challenge.detection.model import (DetectionBackboneError, DetectorConfig, RoIMaxPool, StraddleAwareRPN,
                                           box_head_losses, build_detector)
from ssl_challenge.detection.train import SolverConfig, batch_indices, detect, train_detector
from ssl_challenge.models.backbones import SmallResNetBackbone, build_backbone

CLASSES = ["cat", "dog", "bird"]
TINY = DetectorConfig(min_size=24, max_size=32, anchor_sizes=(8, 16), roi_output_size=4, roi_sampling_ratio=2,
                      rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50,
                      rpn_post_nms_top_n_test=10, rpn_batch_size_per_image=16, box_batch_size_per_image=8,
                      box_score_threshold=0.0)
SOLVER = SolverConfig(iterations=6, lr=0.01, steps=(4,), warmup_iterations=2, images_per_batch=2,
                      checkpoint_every=2, seed=3)
CPU = torch.device("cpu")


@pytest.fixture
def voc_root(tmp_path):
    make_tiny_voc07(tmp_path / "VOCdevkit", CLASSES, n_trainval=6, n_test=4)
    return tmp_path / "VOCdevkit"


def small_detector(seed=0, config=TINY, **options):
    torch.manual_seed(seed)
    return build_detector(build_backbone({"name": "small_resnet"}), config, len(CLASSES), "rot", **options)


def test_trunk_frozen_last_stage_trained_batchnorm_fixed(voc_root, tmp_path):
    detector = small_detector()
    backbone = detector.detector.backbone.body
    head_stage = backbone.stages[3]
    assert detector.detector.roi_heads.box_head.stage is head_stage
    trunk_parameters = [p for name, p in backbone.named_parameters() if not name.startswith("stages.3.")]
    assert trunk_parameters and not any(p.requires_grad for p in trunk_parameters)
    assert all(p.requires_grad for p in head_stage.parameters())
    detector.train()
    assert not any(m.training for m in detector.modules() if isinstance(m, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    train_detector(detector, DetectionSet(voc_root, "trainval", CLASSES), SOLVER, tmp_path / "run", CPU, "d",
                   log=lambda _: None)
    after = detector.state_dict()
    trunk_keys = [k for k in before if k.startswith("detector.backbone.body.") and ".stages.3." not in k]
    assert trunk_keys and all(torch.equal(before[k], after[k]) for k in trunk_keys)  # weights and BN statistics
    head_keys = [k for k in before if k.startswith("detector.roi_heads.box_head.stage.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in head_keys)
    running = [k for k in before if k.startswith("detector.roi_heads.box_head.") and "running_mean" in k]
    assert running and all(torch.equal(before[k], after[k]) for k in running)


def test_resnet50_head_is_layer4():
    backbone = build_backbone({"name": "resnet50"})
    detector = build_detector(backbone, TINY, 20, "supervised")
    assert detector.detector.roi_heads.box_head.stage is backbone.layer4
    assert detector.detector.backbone.out_channels == 1024
    assert detector.detector.roi_heads.box_predictor.cls_score.out_features == 21
    assert not any(p.requires_grad for p in backbone.layer3.parameters())


class ThreeStages(SmallResNetBackbone):
    def stage_functions(self):
        return super().stage_functions()[:4]


def test_roi_max_pooling_bins_by_hand():
    # Detectron's RoIPoolF: the 4 x 4 map of an 8 x 8 image is at scale 1/2; a box is cut into 2 x 2 bins of
    # whole cells and each bin keeps its maximum.
    feature = torch.arange(16.0).reshape(1, 1, 4, 4)
    boxes = [torch.tensor([[0.0, 0.0, 6.0, 6.0], [4.0, 4.0, 6.0, 6.0]])]
    pooled = RoIMaxPool("feat4", 2)({"feat4": feature}, boxes, [(8, 8)])
    assert pooled.tolist() == [[[[5.0, 7.0], [13.0, 15.0]]], [[[10.0, 11.0], [14.0, 15.0]]]]


def test_roi_pooling_is_max_pooling_by_default_and_align_on_request():
    from torchvision.ops import MultiScaleRoIAlign

    assert isinstance(small_detector().detector.roi_heads.box_roi_pool, RoIMaxPool)
    aligned = dataclasses.replace(TINY, roi_pooling="align")
    detector = build_detector(build_backbone({"name": "small_resnet"}), aligned, len(CLASSES), "rot")
    assert isinstance(detector.detector.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    detector.eval()
    with torch.no_grad():
        (found,) = detector([torch.rand(3, 24, 32)])
    assert found["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match=r"evaluation.voc07_detection.roi_pooling: expected one of"):
        dataclasses.replace(TINY, roi_pooling="average")


def test_backbone_without_the_needed_stages_is_named():
    with pytest.raises(DetectionBackboneError, match=r"model 'codc2@r1.concat'.*not a multi-stage backbone"):
        build_detector(nn.Linear(3, 3), TINY, 3, "codc2@r1.concat")
    with pytest.raises(DetectionBackboneError, match=r"model 'tiny': backbone ThreeStages has 4 stages"):
        build_detector(ThreeStages(), TINY, 3, "tiny")


def test_box_outside_the_image_names_the_annotation(voc_root):
    annotation = voc_root / "VOC2007" / "Annotations" / "000002.xml"
    objects = [{"name": "dog", "bbox": (2, 3, 30, 10), "difficult": False, "truncated": False}]
    write_voc_annotation(annotation, "000002", 40, 18, objects)  # <size> wrong: the JPEG is 24 x 18
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    with pytest.raises(ValueError, match=r"000002.xml: bounding box \(2, 3, 30, 10\) leaves the 24 x 18 image"):
        dataset.load(1, False, training=True)
    write_voc_annotation(annotation, "000002", 24, 18, objects)  # the annotation's own size: refused on reading
    with pytest.raises(ValueError, match=r"000002.xml: object 0 \(dog\): bounding box .* leaves the 24 x 18"):
        DetectionSet(voc_root, "trainval", CLASSES)


def test_coordinates_round_trip_and_flip(voc_root):
    voc = np.array([[2.0, 3, 12, 10]])
    assert voc_to_continuous(voc).tolist() == [[1.0, 2.0, 12.0, 10.0]]
    assert continuous_to_voc(voc_to_continuous(voc)).tolist() == voc.tolist()
    assert flip_boxes(torch.tensor([[1.0, 2, 12, 10]]), 24).tolist() == [[12.0, 2.0, 23.0, 10.0]]
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    image, target = dataset.load(0, True, training=True)  # image 1: cat (2, 3, 12, 10); a difficult dog left out
    plain, _ = dataset.load(0, False, training=True)
    assert torch.equal(image, plain.flip(-1)) and target["labels"].tolist() == [1]
    assert target["boxes"].tolist() == [[12.0, 2.0, 23.0, 10.0]]
    assert dataset.load(0, False, training=False)[1]["labels"].tolist() == [1, 2]  # test targets keep difficult


def test_batches_cover_each_epoch_once():
    config = SolverConfig(iterations=10, lr=0.1, images_per_batch=2, seed=1)
    epoch = torch.cat([batch_indices(config, i, 7) for i in range(3)])
    assert len(set(epoch.tolist())) == 6 and not torch.equal(batch_indices(config, 0, 7), batch_indices(config, 3, 7))


def test_killed_and_resumed_training_gives_the_same_weights(voc_root, tmp_path):
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    straight = small_detector()
    assert train_detector(straight, dataset, SOLVER, tmp_path / "straight", CPU, "d", log=lambda _: None)
    killed = small_detector()
    assert not train_detector(killed, dataset, SOLVER, tmp_path / "resumed", CPU, "d", log=lambda _: None,
                              stop_after_iterations=4)
    resumed = small_detector(seed=99)  # a fresh process: other initial weights, all restored from the checkpoint
    messages = []
    assert train_detector(resumed, dataset, SOLVER, tmp_path / "resumed", CPU, "d", log=messages.append)
    assert "resumed from" in messages[0] and "iteration 4" in messages[0]
    expected, found = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[key], found[key]) for key in expected)
    assert not all(torch.equal(expected[key], killed.state_dict()[key]) for key in expected)  # it did train on
    with pytest.raises(ValueError, match="checkpoint of another configuration"):
        train_detector(small_detector(), dataset, SOLVER, tmp_path / "resumed", CPU, "other digest",
                       stop_after_iterations=1)


def test_sigusr1_writes_a_checkpoint_and_the_rerun_finishes_identically(voc_root, tmp_path):
    import os
    import signal

    from ssl_challenge.engine.run_control import Preempted

    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    straight = small_detector()
    train_detector(straight, dataset, SOLVER, tmp_path / "straight", CPU, "d", log=lambda _: None)

    def preempt(message):  # SLURM's warning signal, arriving at iteration 3
        if message.startswith("iteration 3/"):
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(Preempted, match="SIGUSR1 received: checkpoint written at iteration 3"):
        train_detector(small_detector(), dataset, SOLVER, tmp_path / "run", CPU, "d", log=preempt, log_every=1)
    resumed = small_detector(seed=7)
    assert train_detector(resumed, dataset, SOLVER, tmp_path / "run", CPU, "d", log=lambda _: None)
    assert all(torch.equal(value, resumed.state_dict()[key]) for key, value in straight.state_dict().items())
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 6]  # log_every 20 after the rerun: the last one


def test_fast_rcnn_on_given_proposals(voc_root, tmp_path):
    ids = [f"{i:06d}" for i in range(1, 11)]
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps({image_id: [[2, 3, 12, 10], [1, 1, 6, 5], [10, 5, 20, 15]] for image_id in ids}))
    detector = small_detector(given_proposals=True)
    trainval, test = DetectionSet(voc_root, "trainval", CLASSES), DetectionSet(voc_root, "test", CLASSES)
    proposals = read_proposals(path, ids)
    train_detector(detector, trainval, SOLVER, tmp_path / "run", CPU, "d", log=lambda _: None, proposals=proposals)
    seen = []
    detector.detector.roi_heads.box_roi_pool.register_forward_hook(lambda m, args, out: seen.append(args[1]))
    detections = detect(detector, test, CPU, proposals=proposals)
    # the box head saw exactly the given boxes (continuous coordinates), scaled to the resized image (24 -> 32)
    assert torch.allclose(seen[0][0], torch.tensor([[1.0, 2, 12, 10], [0, 0, 6, 5], [9, 4, 20, 15]]) * 32 / 24)
    assert sum(len(rows) for rows in detections.values()) > 0
    with pytest.raises(ValueError, match=r"proposals.json: no proposals for 1 images \(first: \['000011'\]\)"):
        read_proposals(path, ids + ["000011"])


# ------------------------------------------------------------------------------------------------ Detectron's details
def head_batchnorm_parameters(detector) -> dict[str, torch.Tensor]:
    stage = detector.detector.roi_heads.box_head.stage
    return {f"{name}.{kind}": getattr(module, kind) for name, module in stage.named_modules()
            if isinstance(module, nn.BatchNorm2d) for kind in ("weight", "bias")}


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_affine_batchnorm_freezes_res5s_scale_and_bias(voc_root, tmp_path, frozen):
    detector = small_detector(config=dataclasses.replace(TINY, frozen_affine_batchnorm=frozen))
    parameters = head_batchnorm_parameters(detector)
    assert parameters and all(p.requires_grad is not frozen for p in parameters.values())
    before = {name: p.detach().clone() for name, p in parameters.items()}
    convolution = detector.detector.roi_heads.box_head.stage[0].conv1.weight
    convolution_before = convolution.detach().clone()
    solver = dataclasses.replace(SOLVER, iterations=2, warmup_iterations=0, steps=())
    train_detector(detector, DetectionSet(voc_root, "trainval", CLASSES), solver, tmp_path / "run", CPU, "d",
                   log=lambda _: None)
    unchanged = [torch.equal(before[name], p) for name, p in head_batchnorm_parameters(detector).items()]
    assert all(unchanged) if frozen else not any(unchanged)  # AffineChannel: fixed; else each one trains
    assert not torch.equal(convolution_before, convolution)  # res5's convolutions train either way


def test_box_head_loss_is_smooth_l1_of_the_chosen_beta_by_hand():
    # Two sampled RoIs of one image: RoI 0 of class 2 (of 3 + background), RoI 1 background. Uniform logits:
    # cross-entropy ln 4. RoI 0's class-2 deltas minus its targets: (0.5, -2, 0, 1.5).
    logits = torch.zeros(2, 4)
    regression = torch.zeros(2, 16)
    regression[0, 8:12] = torch.tensor([0.5, -2.0, 0.25, 1.5])
    regression[1] = 7.0  # a background RoI's deltas never count
    targets = [torch.tensor([[0.0, 0.0, 0.25, 0.0], [3.0, 3.0, 3.0, 3.0]])]
    labels = [torch.tensor([2, 0])]
    losses = box_head_losses(logits, regression, labels, targets, beta=1.0)
    torch.testing.assert_close(losses["loss_classifier"], torch.log(torch.tensor(4.0)))
    # beta 1: 0.5 x^2 below 1, |x| - 0.5 above: 0.125 + 1.5 + 0 + 1.0, over 2 RoIs
    torch.testing.assert_close(losses["loss_box_reg"], torch.tensor((0.125 + 1.5 + 0.0 + 1.0) / 2))
    # beta 1/9: |x| - 1/18 for each nonzero difference (all above 1/9)
    ninth = box_head_losses(logits, regression, labels, targets, beta=1 / 9)["loss_box_reg"]
    torch.testing.assert_close(ninth, torch.tensor((0.5 + 2.0 + 1.5 - 3 / 18) / 2))


def test_box_head_loss_at_beta_one_ninth_is_torchvisions_bit_for_bit():
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    generator = torch.Generator().manual_seed(0)
    logits, regression = torch.randn(12, 4, generator=generator), torch.randn(12, 16, generator=generator)
    labels = [torch.randint(0, 4, (5,), generator=generator), torch.randint(0, 4, (7,), generator=generator)]
    targets = [torch.randn(5, 4, generator=generator), torch.randn(7, 4, generator=generator)]
    ours = box_head_losses(logits, regression, labels, targets, beta=1 / 9)
    classifier, box = fastrcnn_loss(logits, regression, labels, targets)
    assert torch.equal(ours["loss_classifier"], classifier) and torch.equal(ours["loss_box_reg"], box)


def test_default_detector_trains_as_torchvisions_bit_for_bit(voc_root):
    """The default keys (beta 1/9, every anchor) give torchvision's RPN and RoI-head losses and gradients."""
    import copy

    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.rpn import RegionProposalNetwork

    ours = small_detector()
    theirs = copy.deepcopy(ours)
    theirs.detector.roi_heads.__class__ = RoIHeads  # the same modules and settings, torchvision's code
    theirs.detector.rpn.__class__ = RegionProposalNetwork
    dataset = DetectionSet(voc_root, "trainval", CLASSES)
    images, targets = zip(*(dataset.load(index, flip=False, training=True) for index in range(2)))
    results = []
    for detector in (ours, theirs):
        torch.manual_seed(5)  # the samplers' draws
        losses = detector(list(images), [dict(target) for target in targets])
        sum(losses.values()).backward()
        results.append((losses, [p.grad for p in detector.parameters() if p.requires_grad]))
    (our_losses, our_grads), (their_losses, their_grads) = results
    assert our_losses.keys() == their_losses.keys() == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                                                        "loss_box_reg"}
    assert all(torch.equal(our_losses[key], their_losses[key]) for key in our_losses)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, their_grads))


class FakeImageList:
    def __init__(self, image_sizes):
        self.image_sizes = image_sizes


def straddle_rpn(threshold: int) -> StraddleAwareRPN:
    rpn = small_detector(config=dataclasses.replace(TINY, rpn_straddle_threshold=threshold)).detector.rpn
    assert isinstance(rpn, StraddleAwareRPN)
    return rpn


def assigned(rpn: StraddleAwareRPN, anchors: torch.Tensor, gt: list[list[float]], size=(32, 32)):
    rpn._image_sizes = [size]  # as forward() sets it for the batch
    labels, boxes = rpn.assign_targets_to_anchors([anchors], [{"boxes": torch.tensor(gt)}])
    return labels[0].tolist(), boxes[0]


def test_anchors_straddling_the_border_are_left_out_of_rpn_training():
    # A 32 x 32 image, one object [0, 0, 16, 16]. Anchors: crossing the left border with IoU 240/272 = 0.88 (the
    # object's best), inside with IoU 192/320 = 0.6 (between RPN's 0.3 and 0.7), inside far away (IoU 0), and
    # crossing the right border (IoU 0); the last anchor ends exactly on the border (inside, IoU 0).
    anchors = torch.tensor([[-1.0, 0, 15, 16], [4, 0, 20, 16], [20, 20, 30, 30], [24, 24, 40, 40], [16, 16, 32, 32]])
    gt = [[0.0, 0, 16, 16]]
    labels, _ = assigned(straddle_rpn(-1), anchors, gt)
    assert labels == [1.0, -1.0, 0.0, 0.0, 0.0]  # torchvision: every anchor takes part
    labels, boxes = assigned(straddle_rpn(0), anchors, gt)
    # Detectron (STRADDLE_THRESH 0): the crossing anchors ignored (-1); matching runs over the anchors inside, so
    # the 0.6 anchor is now the object's best and positive; the inside background anchors keep label 0.
    assert labels == [-1.0, 1.0, 0.0, -1.0, 0.0]
    assert torch.equal(boxes[1], torch.tensor(gt[0])) and torch.equal(boxes[0], anchors[0])  # no box to regress
    labels, _ = assigned(straddle_rpn(2), anchors, gt)  # 2 px of slack: the left one (1 px over) is back
    assert labels == [1.0, -1.0, 0.0, -1.0, 0.0]


def test_an_image_with_no_anchor_inside_gives_zero_rpn_losses_not_nan():
    rpn = straddle_rpn(0)
    anchors = torch.tensor([[-8.0, -8, 8, 8], [24, 24, 40, 40]])
    labels, _ = assigned(rpn, anchors, [[0.0, 0, 16, 16]])
    assert labels == [-1.0, -1.0]
    objectness = torch.randn(2, 1, requires_grad=True)
    deltas = torch.randn(2, 4, requires_grad=True)
    objectness_loss, box_loss = rpn.compute_loss(objectness, deltas, [torch.tensor(labels)], [torch.zeros(2, 4)])
    assert objectness_loss.item() == 0.0 and box_loss.item() == 0.0
    (objectness_loss + box_loss).backward()  # still part of the graph
    assert torch.equal(objectness.grad, torch.zeros(2, 1))


def test_detectron_settings_train_end_to_end(voc_root, tmp_path):
    config = dataclasses.replace(TINY, frozen_affine_batchnorm=True, box_smooth_l1_beta=1.0, rpn_straddle_threshold=0)
    detector = small_detector(config=config)
    assert train_detector(detector, DetectionSet(voc_root, "trainval", CLASSES),
                          dataclasses.replace(SOLVER, iterations=3), tmp_path / "run", CPU, "d", log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(np.isfinite(line["loss"]) for line in lines)
    assert detector.detector.rpn._image_sizes is None  # forward() leaves no batch behind
