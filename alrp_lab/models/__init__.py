"""Detectors and their parts: ResNet/ResNeXt backbones, FPN, RetinaNet and its dense loss,
FoveaBox."""

from alrp_lab.models.backbone import FrozenBatchNorm2d, ResNet, resnext101_32x8d
from alrp_lab.models.dense_loss import DenseDetectionLoss, build_dense_targets
from alrp_lab.models.foveabox import (
    FoveaBox,
    FoveaBoxCoder,
    FoveaPriorGenerator,
    build_foveabox,
)
from alrp_lab.models.fpn import FPN
from alrp_lab.models.postprocess import TestConfig, postprocess_image
from alrp_lab.models.retinanet import RetinaHead, RetinaNet, build_retinanet
from alrp_lab.models.weights import load_backbone_weights

__all__ = [
    "DenseDetectionLoss",
    "FPN",
    "FoveaBox",
    "FoveaBoxCoder",
    "FoveaPriorGenerator",
    "FrozenBatchNorm2d",
    "ResNet",
    "RetinaHead",
    "RetinaNet",
    "TestConfig",
    "build_dense_targets",
    "build_foveabox",
    "build_retinanet",
    "load_backbone_weights",
    "postprocess_image",
    "resnext101_32x8d",
]
