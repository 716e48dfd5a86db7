"""Track 4's detector: torchvision's Faster R-CNN (or Fast R-CNN on given proposals) on a frozen backbone.

The FAIR benchmark's frozen-detection recipe (a ResNet-50 C4 detector, FREEZE_AT 4), for any backbone of
:mod:`..models.backbones`:

- the trunk is the stem and the first three stages (feat1..feat4): frozen, its BatchNorm layers fixed (eval mode,
  running statistics, no gradient);
- the RoI box head is the last stage (feat5, res5) applied to the RoI-pooled feat4 map (``roi_pooling``:
  Detectron's default max pooling, RoIPoolF, or RoIAlign), then a global
  average pool: trained, its BatchNorm statistics fixed too (a detection batch of 2-8 images cannot estimate
  them; Detectron uses frozen affine channels everywhere);
- then torchvision's classifier and box regressor (``FastRCNNPredictor``, classes + background).

End-to-end Faster R-CNN has torchvision's RPN on feat4. With ``proposals`` configured, :class:`GivenProposals`
replaces the RPN: it returns the boxes of a proposal file (Fast R-CNN), scaled as the images are.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
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


    def __post_init__(self):
        if self.roi_pooling not in ROI_POOLINGS:
            raise ValueError(f"evaluation.voc07_detection.roi_pooling: expected one of {ROI_POOLINGS}, got "
                             f"{self.roi_pooling!r}")


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
    if config.roi_pooling == "pool":  # FasterRCNN's constructor accepts RoIAlign only
        detector.roi_heads.box_roi_pool = RoIMaxPool(TRUNK_LAYER, config.roi_output_size)
    if given_proposals:
        detector.rpn = GivenProposals()
    wrapped = FrozenBackboneDetector(detector)
    wrapped.train()
    return wrapped
