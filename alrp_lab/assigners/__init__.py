"""Anchor-to-ground-truth assigners; every one returns an :class:`AssignResult`."""

from alrp_lab.assigners.atss import ATSSAssigner
from alrp_lab.assigners.fovea import FoveaAssigner
from alrp_lab.assigners.max_iou import MaxIoUAssigner
from alrp_lab.assigners.result import BACKGROUND, IGNORED, AssignResult

__all__ = [
    "ATSSAssigner",
    "AssignResult",
    "BACKGROUND",
    "FoveaAssigner",
    "IGNORED",
    "MaxIoUAssigner",
]
