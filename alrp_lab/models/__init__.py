"""Detectors and their parts: ResNet/ResNeXt backbones, FPN, RetinaNet and its dense loss,
Faster R-CNN (RPN, RoI head, samplers)."""

from typing import Any, NamedTuple

from alrp_lab.models.backbone import NORMS, FrozenBatchNorm2d, ResNet, resnext101_32x8d
from alrp_lab.models.dense_loss import DenseDetectionLoss, build_dense_targets
from alrp_lab.models.faster_rcnn import FasterRCNN, FasterRCNNConfig, build_faster_rcnn
from alrp_lab.models.foveabox import (
    FoveaBox,
    FoveaBoxCoder,
    FoveaBoxConfig,
    FoveaPriorGenerator,
    build_foveabox,
)
from alrp_lab.models.fpn import FPN
from alrp_lab.models.parts import BackboneConfig, DetectorConfig
from alrp_lab.models.postprocess import TestConfig, postprocess_image
from alrp_lab.models.retinanet import RetinaHead, RetinaNet, RetinaNetConfig, build_retinanet
from alrp_lab.models.roi_head import BoxHead, RoIFeatureExtractor, RoIHead, RoILoss
from alrp_lab.models.rpn import ProposalConfig, RegionProposalNetwork, RPNHead, RPNLoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.models.weights import load_backbone_weights


class Detector(NamedTuple):
    """A choice of the ``detector`` config group: the typed node of its YAML file and the
    builder that takes that node (and the other sections) whole."""

    config: type
    build: Any


# The `detector` config group's choices (detector.name).
DETECTORS = {
    "retinanet": Detector(RetinaNetConfig, build_retinanet),
    "foveabox": Detector(FoveaBoxConfig, build_foveabox),
    "faster_rcnn": Detector(FasterRCNNConfig, build_faster_rcnn),
}

__all__ = [
    "DETECTORS",
    "BackboneConfig",
    "Detector",
    "DetectorConfig",
    "FasterRCNNConfig",
    "FoveaBoxConfig",
    "RetinaNetConfig",
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
