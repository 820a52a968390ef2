"""Detectors and their parts: ResNet/ResNeXt backbones, FPN, RetinaNet and its dense loss,
Faster R-CNN (RPN, RoI head, samplers)."""

from alrp_lab.models.backbone import NORMS, FrozenBatchNorm2d, ResNet, resnext101_32x8d
from alrp_lab.models.dense_loss import DenseDetectionLoss, build_dense_targets
from alrp_lab.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from alrp_lab.models.foveabox import (
    FoveaBox,
    FoveaBoxCoder,
    FoveaPriorGenerator,
    build_foveabox,
)
from alrp_lab.models.fpn import FPN
from alrp_lab.models.postprocess import TestConfig, postprocess_image
from alrp_lab.models.retinanet import RetinaHead, RetinaNet, build_retinanet
from alrp_lab.models.roi_head import BoxHead, RoIFeatureExtractor, RoIHead, RoILoss
from alrp_lab.models.rpn import ProposalConfig, RegionProposalNetwork, RPNHead, RPNLoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.models.weights import load_backbone_weights

# The `detector` config group's choices (detector.name) and the builder each names.
DETECTORS = {
    "retinanet": build_retinanet,
    "foveabox": build_foveabox,
    "faster_rcnn": build_faster_rcnn,
}

__all__ = [
    "DETECTORS",
    "NORMS",
    "BoxHead",
    "DenseDetectionLoss",
    "FPN",
    "FasterRCNN",
    "FoveaBox",
    "FoveaBoxCoder",
    "FoveaPriorGenerator",
    "FrozenBatchNorm2d",
    "ProposalConfig",
    "RPNHead",
    "RPNLoss",
    "RandomSampler",
    "RegionProposalNetwork",
    "ResNet",
    "RetinaHead",
    "RetinaNet",
    "RoIFeatureExtractor",
    "RoIHead",
    "RoILoss",
    "TestConfig",
    "build_dense_targets",
    "build_faster_rcnn",
    "build_foveabox",
    "build_retinanet",
    "load_backbone_weights",
    "postprocess_image",
    "resnext101_32x8d",
]
