"""Track 4's detector: torchvision's Faster R-CNN (or Fast R-CNN on given proposals) on a frozen backbone.

The FAIR benchmark's frozen-detection recipe (a ResNet-50 C4 detector, FREEZE_AT 4), for any backbone of
:mod:`..models.backbones`:

- the trunk is the stem and the first three stages (feat1..feat4): frozen, its BatchNorm layers fixed (eval mode,
  running statistics, no gradient);
- the RoI box head is the last stage (feat5, res5) applied to the RoI-pooled feat4 map (``roi_pooling``:
  Detectron's default max pooling, RoIPoolF, or RoIAlign), then a global
  average pool: trained, its BatchNorm statistics fixed too (a detection batch of 2-8 images cannot estimate
  them). With ``frozen_affine_batchnorm`` its BatchNorm scale and bias are frozen as well, as Detectron's
  AffineChannel layers everywhere; without, they train;
- then torchvision's classifier and box regressor (``FastRCNNPredictor``, classes + background), their loss
  :func:`box_head_losses` (smooth-L1 of ``box_smooth_l1_beta``: torchvision's 1/9, Detectron's 1).

End-to-end Faster R-CNN has torchvision's RPN on feat4 (:class:`StraddleAwareRPN`: with
``rpn_straddle_threshold`` >= 0, anchors crossing the image border by more than that are left out of training, as
Detectron's STRADDLE_THRESH). With ``proposals`` configured, :class:`GivenProposals` replaces the RPN: it returns
the boxes of a proposal file (Fast R-CNN), scaled as the images are.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..models.backbones import LAYER_NAMES, MultiStageBackbone

TRUNK_LAYER = "feat4"  # the map the RPN and the RoI pooling read (res4, stride 16 on ResNet-50)
ROI_POOLINGS = ("pool", "align")


class DetectionBackboneError(ValueError):
    """A backbone that cannot be a detection backbone (not multi-stage, or its last stage is not a module)."""


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's architecture (the ``evaluation.voc07_detection`` keys that shape the network)."""

    min_size: int
    max_size: int
    anchor_sizes: tuple[int, ...]
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    roi_pooling: str = "pool"
    roi_output_size: int = 14
    roi_sampling_ratio: int = 0
    rpn_pre_nms_top_n_train: int = 12000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 64
    box_score_threshold: float = 0.05
    box_nms_threshold: float = 0.3
    detections_per_image: int = 100
    frozen_affine_batchnorm: bool = False  # Detectron: True (AffineChannel)
    box_smooth_l1_beta: float = 1.0 / 9.0  # torchvision's; Detectron's box head: 1
    rpn_straddle_threshold: int = -1  # -1: every anchor trains the RPN (torchvision); Detectron: 0

    def __post_init__(self):
        if self.roi_pooling not in ROI_POOLINGS:
            raise ValueError(f"evaluation.voc07_detection.roi_pooling: expected one of {ROI_POOLINGS}, got "
                             f"{self.roi_pooling!r}")
        if not self.box_smooth_l1_beta > 0:
            raise ValueError("evaluation.voc07_detection.box_smooth_l1_beta: expected a positive number, got "
                             f"{self.box_smooth_l1_beta!r}")
        if self.rpn_straddle_threshold < -1:
            raise ValueError("evaluation.voc07_detection.rpn_straddle_threshold: expected -1 (keep every anchor) or "
                             f"a number of pixels >= 0, got {self.rpn_straddle_threshold!r}")


class RoIMaxPool(nn.Module):
    """Detectron's RoIPoolF on one feature map: each RoI's box, scaled to the map and rounded to whole cells, is
    cut into ``output_size`` x ``output_size`` bins and each bin keeps its maximum. The map's scale is the power
    of two nearest to its height over the padded batch's (as torchvision's ``MultiScaleRoIAlign`` infers it)."""

    def __init__(self, layer: str, output_size: int):
        super().__init__()
        self.layer, self.output_size = layer, output_size

    def forward(self, features: dict, proposals: list, image_shapes: list) -> torch.Tensor:
        feature = features[self.layer]
        padded_height = max(height for height, _ in image_shapes)
        scale = 2.0 ** round(torch.log2(torch.tensor(feature.shape[-2] / padded_height)).item())
        return roi_pool(feature, proposals, self.output_size, scale)


def last_stage_module(backbone: nn.Module, model_name: str) -> nn.Module:
    """The backbone's res5 as a module; raises :class:`DetectionBackboneError` naming the model otherwise."""
    if not isinstance(backbone, MultiStageBackbone):
        raise DetectionBackboneError(
            f"model {model_name!r}: its backbone {type(backbone).__name__} is not a multi-stage backbone "
            f"(stem and four stages, {', '.join(LAYER_NAMES)}); detection needs res4 for the trunk and res5 for "
            "the box head. Leave it out of evaluation.voc07_detection.models")
    stages = backbone.stage_functions()
    if len(stages) != len(LAYER_NAMES) or not isinstance(stages[-1], nn.Module):
        raise DetectionBackboneError(
            f"model {model_name!r}: backbone {type(backbone).__name__} has {len(stages)} stages (last: "
            f"{type(stages[-1]).__name__ if stages else None}); detection needs the stem, three trunk stages and a "
            "last stage that is a module (the RoI box head). Leave it out of evaluation.voc07_detection.models")
    return stages[-1]


class FrozenTrunk(nn.Module):
    """The stem and the first three stages of a backbone: images [B, 3, H, W] -> {"feat4": [B, C4, h, w]}.

    Holds the whole backbone (so that its state dict and Sobel input layer come along) but runs only the first
    four steps; every parameter of the trunk is frozen."""

    def __init__(self, backbone: MultiStageBackbone, head_stage: nn.Module):
        super().__init__()
        self.body = backbone
        self.out_channels = backbone.layer_channels[TRUNK_LAYER]
        head_parameters = {id(p) for p in head_stage.parameters()}
        for parameter in backbone.parameters():
            if id(parameter) not in head_parameters:
                parameter.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.body._prepare_input(images)
        for stage in self.body.stage_functions()[:-1]:
            x = stage(x)
        return OrderedDict([(TRUNK_LAYER, x.contiguous())])


class LastStageBoxHead(nn.Module):
    """RoI features [K, C4, P, P] -> res5 -> global average pool -> [K, C5] (the C4 detector's box head)."""

    def __init__(self, stage: nn.Module, out_channels: int):
        super().__init__()
        self.stage = stage
        self.out_channels = out_channels

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        return self.stage(roi_features).mean(dim=(2, 3))


class GivenProposals(nn.Module):
    """An RPN that returns given boxes (Fast R-CNN). Call :meth:`set_batch` with the batch's proposals (float
    [P_i, 4] each, in the input images' pixel coordinates, x1 y1 x2 y2 continuous) before each forward."""

    def __init__(self):
        super().__init__()
        self._batch: list[torch.Tensor] | None = None

    def set_batch(self, proposals: list[torch.Tensor], original_sizes: list[tuple[int, int]]) -> None:
        self._batch, self._sizes = proposals, original_sizes

    def forward(self, images, features, targets=None):
        if self._batch is None or len(self._batch) != len(images.image_sizes):
            raise RuntimeError("GivenProposals: set_batch() must give the proposals of every image of the batch")
        scaled = []
        for boxes, (height, width), (original_height, original_width) in zip(self._batch, images.image_sizes,
                                                                              self._sizes):
            ratio = torch.tensor([width / original_width, height / original_height] * 2, dtype=torch.float32)
            scaled.append(boxes.to(torch.float32) * ratio.to(boxes.device))
        self._batch = None
        return scaled, {}


def box_head_losses(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: list[torch.Tensor],
                    regression_targets: list[torch.Tensor], beta: float) -> dict[str, torch.Tensor]:
    """The Fast R-CNN losses of N sampled RoIs (``labels``: per image [N_i] classes, 0 background;
    ``regression_targets``: per image [N_i, 4] encoded deltas): cross-entropy of ``class_logits`` [N, C + 1], and
    smooth-L1 with ``beta`` between each positive RoI's ``box_regression`` [N, 4 (C + 1)] deltas of its own class and
    its targets, summed and divided by N. As torchvision's ``fastrcnn_loss`` (same operations, so the same bytes at
    its beta 1/9); Detectron's box head uses beta 1."""
    labels, targets = torch.cat(labels, dim=0), torch.cat(regression_targets, dim=0)
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(labels.numel(), -1, 4)[positive, labels[positive]]
    box = F.smooth_l1_loss(deltas, targets[positive], beta=beta, reduction="sum") / labels.numel()
    return {"loss_classifier": classification, "loss_box_reg": box}


class SmoothL1RoIHeads(RoIHeads):
    """torchvision's RoI heads (box branch only) whose training loss is :func:`box_head_losses` with a chosen beta;
    inference is torchvision's."""

    def __init__(self, heads: RoIHeads, smooth_l1_beta: float):
        super().__init__(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                         heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                         heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                         heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
        self.smooth_l1_beta = smooth_l1_beta

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, proposals,
                                                                                          image_shapes)))
        return [], box_head_losses(class_logits, box_regression, labels, regression_targets, self.smooth_l1_beta)


def anchors_inside(anchors: torch.Tensor, height: int, width: int, straddle_threshold: int) -> torch.Tensor:
    """Anchors [A, 4] (x1 y1 x2 y2, continuous, in the resized image's pixels) -> bool [A]: within the ``height`` x
    ``width`` image, each side allowed ``straddle_threshold`` pixels beyond the border. Detectron's test is
    x2 < width + threshold on inclusive pixel indices (x2 = last pixel), that is x2 <= width + threshold here."""
    return ((anchors[:, 0] >= -straddle_threshold) & (anchors[:, 1] >= -straddle_threshold)
            & (anchors[:, 2] <= width + straddle_threshold) & (anchors[:, 3] <= height + straddle_threshold))


class StraddleAwareRPN(RegionProposalNetwork):
    """torchvision's RPN whose training leaves out the anchors that cross the image border (``straddle_threshold``
    >= 0; -1: every anchor, torchvision's behaviour): they are labelled -1 (ignored by the sampler) and the
    ground-truth matching, its best-anchor-per-box rule included, runs over the anchors inside, as Detectron's.
    A batch in which no anchor is left to sample (images smaller than every anchor) gets RPN losses 0, not NaN."""

    def __init__(self, rpn: RegionProposalNetwork, straddle_threshold: int):
        super().__init__(rpn.anchor_generator, rpn.head, rpn.proposal_matcher.high_threshold,
                         rpn.proposal_matcher.low_threshold, rpn.fg_bg_sampler.batch_size_per_image,
                         rpn.fg_bg_sampler.positive_fraction, rpn._pre_nms_top_n, rpn._post_nms_top_n,
                         rpn.nms_thresh, rpn.score_thresh)
        self.straddle_threshold = straddle_threshold
        self._image_sizes: list[tuple[int, int]] | None = None

    def forward(self, images, features, targets=None):
        self._image_sizes = list(images.image_sizes)  # read by assign_targets_to_anchors during this call
        try:
            return super().forward(images, features, targets)
        finally:
            self._image_sizes = None

    def assign_targets_to_anchors(self, anchors, targets):
        if self.straddle_threshold < 0:
            return super().assign_targets_to_anchors(anchors, targets)
        labels, matched_boxes = [], []
        for anchors_of_image, target, (height, width) in zip(anchors, targets, self._image_sizes):
            inside = anchors_inside(anchors_of_image, height, width, self.straddle_threshold)
            label = torch.full((len(anchors_of_image),), -1.0, device=anchors_of_image.device)
            boxes = anchors_of_image.clone()  # outside: regression targets 0, never sampled
            if bool(inside.any()):
                [inside_labels], [inside_boxes] = super().assign_targets_to_anchors([anchors_of_image[inside]],
                                                                                    [target])
                label[inside], boxes[inside] = inside_labels, inside_boxes
            labels.append(label)
            matched_boxes.append(boxes)
        return labels, matched_boxes

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        if self.straddle_threshold < 0 or any(bool((label >= 0).any()) for label in labels):
            return super().compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)
        zero = objectness.sum() * 0.0 + pred_bbox_deltas.sum() * 0.0  # connected to the graph, for backward()
        return zero, zero.clone()


def fixed_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm in eval mode (running statistics); called after each ``train()``."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()


class FrozenBackboneDetector(nn.Module):
    """torchvision's FasterRCNN around a frozen trunk, with BatchNorm kept in eval mode whatever ``train()``
    says. ``forward`` is FasterRCNN's: (images, targets) -> losses in training, detections in eval."""

    def __init__(self, detector: FasterRCNN):
        super().__init__()
        self.detector = detector

    def train(self, mode: bool = True):
        super().train(mode)
        fixed_batchnorm(self)
        return self

    def forward(self, images, targets=None):
        return self.detector(images, targets)

    @property
    def given_proposals(self) -> GivenProposals | None:
        rpn = self.detector.rpn
        return rpn if isinstance(rpn, GivenProposals) else None


def build_detector(backbone: MultiStageBackbone, config: DetectorConfig, num_classes: int, model_name: str,
                   given_proposals: bool = False) -> FrozenBackboneDetector:
    """The detector of ``num_classes`` object classes (+ background) on ``backbone`` (its weights used as they
    are: load them first). ``model_name`` names the model in errors."""
    head_stage = last_stage_module(backbone, model_name)
    trunk = FrozenTrunk(backbone, head_stage)
    head = LastStageBoxHead(head_stage, backbone.layer_channels["feat5"])
    anchors = AnchorGenerator(sizes=(tuple(config.anchor_sizes),), aspect_ratios=(tuple(config.aspect_ratios),))
    detector = FasterRCNN(
        trunk, num_classes=None, min_size=config.min_size, max_size=config.max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign([TRUNK_LAYER], config.roi_output_size, config.roi_sampling_ratio),
        box_head=head, box_predictor=FastRCNNPredictor(head.out_channels, num_classes + 1),
        box_score_thresh=config.box_score_threshold, box_nms_thresh=config.box_nms_threshold,
        box_detections_per_img=config.detections_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
    )
    detector.roi_heads = SmoothL1RoIHeads(detector.roi_heads, config.box_smooth_l1_beta)
    if config.roi_pooling == "pool":  # FasterRCNN's constructor accepts RoIAlign only
        detector.roi_heads.box_roi_pool = RoIMaxPool(TRUNK_LAYER, config.roi_output_size)
    detector.rpn = GivenProposals() if given_proposals else StraddleAwareRPN(detector.rpn,
                                                                              config.rpn_straddle_threshold)
    if config.frozen_affine_batchnorm:  # the trunk's are frozen with it; res5's too, as AffineChannel
        for module in head_stage.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
    wrapped = FrozenBackboneDetector(detector)
    wrapped.train()
    return wrapped
