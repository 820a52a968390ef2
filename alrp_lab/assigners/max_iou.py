"""IoU-threshold assignment: RetinaNet's (0.5 / 0.4) and the RPN's (0.7 / 0.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alrp_lab.assigners.result import BACKGROUND, IGNORED, AssignResult, check_assign_inputs
from alrp_lab.ops.boxes import box_iou

__all__ = ["MaxIoUAssigner"]


class MaxIoUAssigner:
    """Assign each anchor to the ground truth it overlaps most (mmdetection's MaxIoUAssigner).

    An anchor whose best IoU is ``>= pos_iou`` is a positive for that ground truth, one under
    ``neg_iou`` is background, one in between is ignored. With ``low_quality_matches`` every
    ground truth whose best IoU over the anchors is ``>= min_pos_iou`` and ``> 0`` also
    claims every anchor that attains that best IoU (mmdetection's ``gt_max_assign_all``), so
    that no ground truth is left without a positive; such a claim overrides the threshold
    rule, as in mmdetection. An anchor claimed by several ground truths goes to the one it
    overlaps most (ties: the lowest index) where mmdetection's loop lets the last one win.

    Args:
        pos_iou: IoU at or above which an anchor is positive.
        neg_iou: IoU under which an anchor is background; ``neg_iou <= pos_iou``.
        min_pos_iou: smallest IoU a low-quality match may have.
        low_quality_matches: whether every ground truth keeps its best anchor(s).
    """

    def __init__(
        self,
        pos_iou: float = 0.5,
        neg_iou: float = 0.4,
        min_pos_iou: float = 0.0,
        low_quality_matches: bool = True,
    ) -> None:
        if not 0.0 <= neg_iou <= pos_iou <= 1.0:
            raise ValueError(
                f"MaxIoUAssigner needs 0 <= neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, "
                f"pos_iou={pos_iou}"
            )
        if not 0.0 <= min_pos_iou <= 1.0:
            raise ValueError(f"MaxIoUAssigner min_pos_iou must lie in [0, 1], got {min_pos_iou}")
        self.pos_iou = float(pos_iou)
        self.neg_iou = float(neg_iou)
        self.min_pos_iou = float(min_pos_iou)
        self.low_quality_matches = bool(low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"MaxIoUAssigner(pos_iou={self.pos_iou}, neg_iou={self.neg_iou}, "
            f"min_pos_iou={self.min_pos_iou}, low_quality_matches={self.low_quality_matches})"
        )

    def assign(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        num_anchors_per_level: Sequence[int] | None = None,
    ) -> AssignResult:
        """Assign anchors to ground truths.

        Args:
            anchors: (A, 4) anchors of all levels, concatenated.
            gt_boxes: (G, 4) ground-truth boxes.
            num_anchors_per_level: unused here (the rule is level-free); accepted so every
                assigner has one signature.

        Returns:
            AssignResult with matched_gt (A,) and max_iou (A,).
        """
        check_assign_inputs(anchors, gt_boxes)
        num_anchors = anchors.shape[0]
        if gt_boxes.shape[0] == 0 or num_anchors == 0:
            return AssignResult.all_background(num_anchors, anchors.device, anchors.dtype)

        iou = box_iou(gt_boxes.to(anchors.dtype), anchors)  # (G, A)
        max_iou, best_gt = iou.max(dim=0)  # (A,), (A,)
        matched = torch.full_like(best_gt, IGNORED)
        matched[max_iou < self.neg_iou] = BACKGROUND
        positive = max_iou >= self.pos_iou
        matched[positive] = best_gt[positive]

        if self.low_quality_matches:
            gt_best_iou = iou.max(dim=1).values  # (G,)
            # A ground truth touching no anchor would otherwise claim all of them (IoU 0 ties).
            eligible = (gt_best_iou >= self.min_pos_iou) & (gt_best_iou > 0)
            claims = (iou == gt_best_iou[:, None]) & eligible[:, None]  # (G, A)
            claim_iou, claim_gt = torch.where(claims, iou, -1.0).max(dim=0)  # (A,), (A,)
            claimed = claims.any(dim=0)
            matched[claimed] = claim_gt[claimed]
            max_iou = torch.where(claimed, claim_iou, max_iou)

        return AssignResult(matched_gt=matched, max_iou=max_iou)
