"""Loss functions, usable alone in any PyTorch detector: ``from alrp_lab.losses import ALRPLoss``.

Ranking losses with error-driven gradients (aLRP, AP, NDCG; the framework in ``ranking``),
score losses (focal, cross entropy), localisation errors and the self-balance weight.
"""

from alrp_lab.losses.alrp import ALRPLoss, ALRPLossOutput, alrp_loss
from alrp_lab.losses.ap import APLoss, ap_loss
from alrp_lab.losses.box_error import (
    BOX_ERRORS,
    BoxError,
    GIoUError,
    IoUError,
    L1Error,
    SmoothL1Error,
    build_box_error,
)
from alrp_lab.losses.cross_entropy import CrossEntropyLoss, sigmoid_cross_entropy
from alrp_lab.losses.focal import FocalLoss, sigmoid_focal_loss
from alrp_lab.losses.ndcg import NDCGLoss, ndcg_loss
from alrp_lab.losses.ranking import RankingLossDefinition, RankingStats, error_driven
from alrp_lab.losses.self_balance import SelfBalance

# The `loss` config group's choices (loss.name): the classification losses of a detector.
CLASSIFICATION_LOSSES: dict[str, type] = {
    "alrp": ALRPLoss,
    "ap": APLoss,
    "focal": FocalLoss,
    "ce": CrossEntropyLoss,
}

__all__ = [
    "CLASSIFICATION_LOSSES",
    "BOX_ERRORS",
    "ALRPLoss",
    "ALRPLossOutput",
    "APLoss",
    "BoxError",
    "CrossEntropyLoss",
    "FocalLoss",
    "GIoUError",
    "IoUError",
    "L1Error",
    "NDCGLoss",
    "RankingLossDefinition",
    "RankingStats",
    "SelfBalance",
    "SmoothL1Error",
    "alrp_loss",
    "ap_loss",
    "build_box_error",
    "error_driven",
    "ndcg_loss",
    "sigmoid_cross_entropy",
    "sigmoid_focal_loss",
]
