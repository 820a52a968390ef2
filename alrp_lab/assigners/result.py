"""The one result type every assigner returns, and the input checks they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AssignResult", "BACKGROUND", "IGNORED", "check_assign_inputs"]

# Codes in ``matched_gt`` for anchors that are not positives.
BACKGROUND = -1
IGNORED = -2


@dataclass
class AssignResult:
    """Which ground truth, if any, each anchor is trained against.

    Attributes:
        matched_gt: (A,) long; ``>= 0`` the index of the ground truth anchor ``a`` is a
            positive for, ``-1`` (BACKGROUND) a negative, ``-2`` (IGNORED) left out of
            the loss.
        max_iou: (A,) float; the IoU of anchor ``a`` with its matched ground truth for a
            positive, with its best ground truth otherwise, and 0 when there is none.
    """

    matched_gt: Tensor
    max_iou: Tensor

    def __post_init__(self) -> None:
        if self.matched_gt.dim() != 1 or self.matched_gt.shape != self.max_iou.shape:
            raise ValueError(
                "AssignResult needs matched_gt and max_iou of the same shape (A,), got "
                f"{tuple(self.matched_gt.shape)} and {tuple(self.max_iou.shape)}"
            )

    @classmethod
    def all_background(
        cls,
        num_anchors: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> AssignResult:
        """Every one of ``num_anchors`` anchors background with IoU 0 (no ground truth)."""
        return cls(
            matched_gt=torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=device),
            max_iou=torch.zeros(num_anchors, dtype=dtype, device=device),
        )

    @property
    def num_anchors(self) -> int:
        return self.matched_gt.shape[0]

    @property
    def positive_mask(self) -> Tensor:
        """(A,) bool: anchors matched to a ground truth."""
        return self.matched_gt >= 0

    @property
    def negative_mask(self) -> Tensor:
        """(A,) bool: background anchors (ignored ones excluded)."""
        return self.matched_gt == BACKGROUND

    @property
    def num_positives(self) -> int:
        return int(self.positive_mask.sum())


def check_assign_inputs(anchors: Tensor, gt_boxes: Tensor) -> None:
    """Raise a ValueError naming the fix when anchors or ground truths are misshapen."""
    if anchors.dim() != 2 or anchors.shape[1] != 4:
        raise ValueError(f"assign needs anchors of shape (A, 4), got {tuple(anchors.shape)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"assign needs gt_boxes of shape (G, 4), got {tuple(gt_boxes.shape)}")
