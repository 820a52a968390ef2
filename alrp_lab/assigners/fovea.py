"""FoveaBox's target assignment (Kong et al., 2020), as mmdetection's ``FoveaHead`` does it.

FoveaBox has no anchors: every feature location is one "prior". A ground truth of scale
sqrt(w * h) is handed to every pyramid level whose scale range holds that scale (ranges
overlap, so an object can train several levels), and on such a level the positives are the
locations inside its fovea, the box shrunk about its centre to ``sigma`` times its width and
height. Everything else is background; nothing is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alrp_lab.assigners.result import BACKGROUND, AssignResult, check_assign_inputs
from alrp_lab.ops.boxes import box_iou

__all__ = ["FoveaAssigner"]


def _check_levels(
    strides: Sequence[float], scale_ranges: Sequence[Sequence[float]]
) -> tuple[tuple[float, ...], tuple[tuple[float, float], ...]]:
    try:
        strides_t = tuple(float(s) for s in strides)
        ranges_t = tuple(tuple(float(v) for v in r) for r in scale_ranges)
    except (TypeError, ValueError):
        raise ValueError(
            f"FoveaAssigner needs numeric strides and (low, high) scale ranges, got strides "
            f"{strides}, scale_ranges {scale_ranges}"
        ) from None
    if not strides_t or min(strides_t) <= 0:
        raise ValueError(f"FoveaAssigner needs positive strides, one per level, got {strides}")
    if len(ranges_t) != len(strides_t) or any(len(r) != 2 for r in ranges_t):
        raise ValueError(
            f"FoveaAssigner needs one (low, high) scale range per stride: {len(strides_t)} "
            f"strides, scale_ranges {scale_ranges}"
        )
    if any(not 0 <= lo <= hi for lo, hi in ranges_t):
        raise ValueError(f"every scale range needs 0 <= low <= high, got {scale_ranges}")
    return strides_t, ranges_t  # type: ignore[return-value]


class FoveaAssigner:
    """Scale-range level selection and fovea-region positives.

    A ground truth (x1, y1, x2, y2) is assigned to level l when
    ``scale_ranges[l][0] <= sqrt(w h) <= scale_ranges[l][1]``. There, location (i, j), whose
    centre is ((j + 0.5) s, (i + 0.5) s) for the level's stride s, is a positive when its
    column j lies in ``[ceil(x1/s + (1 - sigma) w/2s - 0.5), floor(x1/s + (1 + sigma) w/2s
    - 0.5)]`` and its row likewise, i.e. when its centre lies in ``[cx - sigma w/2, cx + sigma
    w/2] x [cy - sigma h/2, cy + sigma h/2]``. As in mmdetection both bounds are clamped to
    the grid, so an object whose fovea falls off the map's edge still claims the border
    location, while a small object whose fovea holds no centre gets no positive there.
    A location claimed by several ground truths goes to the smallest (mmdetection paints
    larger objects first); equal sizes go to the lowest index.

    Args:
        strides: the stride of each level, e.g. (8, 16, 32, 64, 128).
        scale_ranges: (low, high) object scale sqrt(w h) in pixels per level, inclusive.
        sigma: the fovea's size as a fraction of the box (0.4 in the paper).
    """

    def __init__(
        self,
        strides: Sequence[float] = (8, 16, 32, 64, 128),
        scale_ranges: Sequence[Sequence[float]] = (
            (1, 64),
            (32, 128),
            (64, 256),
            (128, 512),
            (256, 2048),
        ),
        sigma: float = 0.4,
    ) -> None:
        self.strides, self.scale_ranges = _check_levels(strides, scale_ranges)
        if not 0.0 < sigma <= 1.0:
            raise ValueError(f"FoveaAssigner sigma must lie in (0, 1], got {sigma}")
        self.sigma = float(sigma)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def __repr__(self) -> str:
        return (
            f"FoveaAssigner(strides={self.strides}, scale_ranges={self.scale_ranges}, "
            f"sigma={self.sigma})"
        )

    def assign(
        self, anchors: Tensor, gt_boxes: Tensor, num_anchors_per_level: Sequence[int]
    ) -> AssignResult:
        """Assign feature locations to ground truths.

        Args:
            anchors: (A, 4) one prior per location, all levels concatenated, each level's
                locations in row-major (y, x) order over its full grid; only the centres are
                read (FoveaBox's priors are boxes centred on their locations).
            gt_boxes: (G, 4) ground-truth boxes (x1, y1, x2, y2).
            num_anchors_per_level: locations of each level, summing to A.

        Returns:
            AssignResult with matched_gt (A,) (a ground truth index, or -1) and max_iou (A,),
            the IoU of each prior box with its matched (else best) ground truth.
        """
        check_assign_inputs(anchors, gt_boxes)
        counts = [int(n) for n in num_anchors_per_level]
        if len(counts) != self.num_levels or sum(counts) != anchors.shape[0]:
            raise ValueError(
                f"FoveaAssigner has {self.num_levels} levels (strides {self.strides}) but got "
                f"num_anchors_per_level {counts} for {anchors.shape[0]} priors; they must agree"
            )
        num_anchors = anchors.shape[0]
        if gt_boxes.shape[0] == 0 or num_anchors == 0:
            return AssignResult.all_background(num_anchors, anchors.device, anchors.dtype)

        gt = gt_boxes.to(anchors.dtype)
        scales = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).clamp(min=0).sqrt()  # (G,)
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
        matched = torch.full((num_anchors,), BACKGROUND, dtype=torch.long, device=anchors.device)
        start = 0
        for count, stride, (low, high) in zip(counts, self.strides, self.scale_ranges, strict=True):
            level = slice(start, start + count)
            start += count
            in_range = (scales >= low) & (scales <= high)  # (G,)
            if count == 0 or not bool(in_range.any()):
                continue
            matched[level] = self._assign_level(centres[level], gt, scales, in_range, stride)

        iou = box_iou(gt, anchors)  # (G, A)
        best_iou = iou.max(dim=0).values
        positive = matched >= 0
        matched_iou = iou.gather(0, matched.clamp(min=0)[None]).squeeze(0)
        return AssignResult(matched, torch.where(positive, matched_iou, best_iou))

    def _assign_level(
        self, centres: Tensor, gt: Tensor, scales: Tensor, in_range: Tensor, stride: float
    ) -> Tensor:
        """matched_gt (A_l,) of one level from its location centres (A_l, 2)."""
        # Grid indices of the locations: centre = (index + 0.5) * stride.
        col = torch.round(centres[:, 0] / stride - 0.5).long()
        row = torch.round(centres[:, 1] / stride - 0.5).long()
        width, height = int(col.max()) + 1, int(row.max()) + 1
        # mmdetection's arithmetic, in feature-map units, so that boundary cases agree.
        box = gt / stride
        half_w = 0.5 * (box[:, 2] - box[:, 0])
        half_h = 0.5 * (box[:, 3] - box[:, 1])
        left = torch.ceil(box[:, 0] + (1 - self.sigma) * half_w - 0.5).long()
        right = torch.floor(box[:, 0] + (1 + self.sigma) * half_w - 0.5).long()
        top = torch.ceil(box[:, 1] + (1 - self.sigma) * half_h - 0.5).long()
        bottom = torch.floor(box[:, 1] + (1 + self.sigma) * half_h - 0.5).long()
        left, right = left.clamp(0, width - 1), right.clamp(0, width - 1)
        top, bottom = top.clamp(0, height - 1), bottom.clamp(0, height - 1)
        claims = (
            in_range[:, None]
            & (col[None] >= left[:, None])
            & (col[None] <= right[:, None])
            & (row[None] >= top[:, None])
            & (row[None] <= bottom[:, None])
        )  # (G, A_l)
        # The smallest claimant wins; argmin returns the first of equal scales.
        cost = torch.where(claims, scales[:, None], torch.full_like(scales[:, None], torch.inf))
        best_cost, best_gt = cost.min(dim=0)
        return torch.where(torch.isfinite(best_cost), best_gt, torch.full_like(best_gt, -1))
