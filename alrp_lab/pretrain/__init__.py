"""Backbones pretrained here, without a download: fractal classification (FractalDB).

``alrp-lab pretrain`` and ``backbone.weights=builtin`` build them into the machine's cache.
"""

from alrp_lab.pretrain.cache import builtin_weights, default_root, weights_path
from alrp_lab.pretrain.train import (
    PretrainConfig,
    PretrainSpec,
    pretrain_backbone,
    spec_from_config,
)

BUILTIN = "builtin"

__all__ = [
    "BUILTIN",
    "PretrainConfig",
    "PretrainSpec",
    "builtin_weights",
    "default_root",
    "pretrain_backbone",
    "spec_from_config",
    "weights_path",
]
