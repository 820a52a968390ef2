"""Adaptive Training Sample Selection (Zhang et al., CVPR 2020), as mmdetection implements it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alrp_lab.assigners.result import BACKGROUND, AssignResult, check_assign_inputs
from alrp_lab.ops.boxes import box_iou

__all__ = ["ATSSAssigner"]

# An anchor centre must lie this many pixels inside a ground truth to count as inside it
# (the constant of the authors' code and of mmdetection).
_INSIDE_MARGIN = 0.01


def _centres(boxes: Tensor) -> Tensor:
    """(N, 4) boxes -> (N, 2) centres (cx, cy)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


class ATSSAssigner:
    """ATSS: a per-ground-truth IoU threshold from the statistics of nearby anchors.

    For every ground truth: on each level take the ``topk`` anchors whose centres are
    closest to its centre; over these candidates (all levels together) set the threshold
    to mean + std of their IoUs with it (std unbiased, as torch's default in the reference
    code; 0 when there is a single candidate); candidates with IoU >= threshold whose
    centre lies inside the ground truth are positives for it. An anchor positive for several
    ground truths takes the one it overlaps most. Every other anchor is background: ATSS
    ignores nothing.

    Args:
        topk: candidates per level and ground truth (fewer on a level with fewer anchors).
    """

    def __init__(self, topk: int = 9) -> None:
        if int(topk) != topk or topk < 1:
            raise ValueError(f"ATSSAssigner topk must be an integer >= 1, got {topk}")
        self.topk = int(topk)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk})"

    def assign(
        self, anchors: Tensor, gt_boxes: Tensor, num_anchors_per_level: Sequence[int]
    ) -> AssignResult:
        """Assign anchors to ground truths.

        Args:
            anchors: (A, 4) anchors of all levels, concatenated level by level.
            gt_boxes: (G, 4) ground-truth boxes.
            num_anchors_per_level: anchors of each level, summing to A.

        Returns:
            AssignResult with matched_gt (A,) and max_iou (A,).
        """
        check_assign_inputs(anchors, gt_boxes)
        num_anchors = anchors.shape[0]
        level_sizes = [int(n) for n in num_anchors_per_level]
        if min(level_sizes, default=0) < 0 or sum(level_sizes) != num_anchors:
            raise ValueError(
                f"ATSSAssigner needs num_anchors_per_level summing to the {num_anchors} "
                f"anchors, got {level_sizes}; pass the per-level counts of the same anchors"
            )
        if gt_boxes.shape[0] == 0 or num_anchors == 0:
            return AssignResult.all_background(num_anchors, anchors.device, anchors.dtype)

        gt_boxes = gt_boxes.to(anchors.dtype)
        iou = box_iou(anchors, gt_boxes)  # (A, G)
        anchor_centres = _centres(anchors)  # (A, 2)
        # Squared distances rank the same as distances and need no sqrt.
        dist = (anchor_centres[:, None, :] - _centres(gt_boxes)[None, :, :]).pow(2).sum(-1)

        candidates = []  # per level (k_l, G) anchor indices
        start = 0
        for size in level_sizes:
            k = min(self.topk, size)
            if k > 0:
                nearest = dist[start : start + size].topk(k, dim=0, largest=False).indices
                candidates.append(nearest + start)
            start += size
        candidate_idx = torch.cat(candidates)  # (C, G)
        candidate_iou = iou.gather(0, candidate_idx)  # (C, G)

        if candidate_idx.shape[0] > 1:
            std = candidate_iou.std(dim=0)
        else:
            std = torch.zeros_like(candidate_iou[0])
        threshold = candidate_iou.mean(dim=0) + std  # (G,)

        cx = anchor_centres[candidate_idx, 0]  # (C, G)
        cy = anchor_centres[candidate_idx, 1]
        inside = (
            torch.stack(
                (
                    cx - gt_boxes[:, 0],
                    cy - gt_boxes[:, 1],
                    gt_boxes[:, 2] - cx,
                    gt_boxes[:, 3] - cy,
                )
            ).amin(dim=0)
            > _INSIDE_MARGIN
        )
        is_pos = (candidate_iou >= threshold) & inside  # (C, G)

        # IoU of each (anchor, gt) pair that is a positive, -1 elsewhere; a column's
        # candidates are distinct anchors, so the scatter writes each cell at most once.
        pos_iou = torch.full_like(iou, -1.0)
        pos_iou.scatter_(0, candidate_idx, torch.where(is_pos, candidate_iou, -1.0))
        best_pos_iou, best_gt = pos_iou.max(dim=1)  # (A,)
        positive = best_pos_iou >= 0
        matched = torch.where(positive, best_gt, torch.full_like(best_gt, BACKGROUND))
        max_iou = torch.where(positive, best_pos_iou, iou.max(dim=1).values)
        return AssignResult(matched_gt=matched, max_iou=max_iou)
