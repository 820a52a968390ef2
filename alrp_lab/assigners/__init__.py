"""Anchor-to-ground-truth assigners; every one returns an :class:`AssignResult`."""

from alrp_lab.assigners.atss import ATSSAssigner
from alrp_lab.assigners.fovea import FoveaAssigner
from alrp_lab.assigners.max_iou import MaxIoUAssigner
from alrp_lab.assigners.result import BACKGROUND, IGNORED, AssignResult

# The `assigner` config group's choices (assigner.name) and the class each names.
ASSIGNERS: dict[str, type] = {"atss": ATSSAssigner, "max_iou": MaxIoUAssigner}

__all__ = [
    "ASSIGNERS",
    "ATSSAssigner",
    "AssignResult",
    "BACKGROUND",
    "FoveaAssigner",
    "IGNORED",
    "MaxIoUAssigner",
]
