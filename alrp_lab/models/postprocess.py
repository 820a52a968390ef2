"""Dense-detector post-processing: per-level top-k, decoding, clipping, class-wise NMS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import clip_boxes_to_image
from alrp_lab.ops.nms import batched_nms

__all__ = ["TestConfig", "postprocess_image"]


@dataclass(frozen=True)
class TestConfig:
    """Inference settings (SPEC section 4).

    Attributes:
        score_thr: candidates need a sigmoid score above this.
        nms_iou: IoU above which class-wise NMS drops the lower-scored box.
        pre_nms_topk: candidates kept per level (highest scores) before NMS.
        max_per_img: detections kept per image after NMS.
    """

    __test__ = False  # not a pytest test class despite the name

    score_thr: float = 0.05
    nms_iou: float = 0.5
    pre_nms_topk: int = 1000
    max_per_img: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_thr < 1.0:
            raise ValueError(f"score_thr must lie in [0, 1), got {self.score_thr}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must lie in (0, 1], got {self.nms_iou}")
        if self.pre_nms_topk < 1 or self.max_per_img < 1:
            raise ValueError(
                f"pre_nms_topk and max_per_img must be >= 1, got {self.pre_nms_topk} and "
                f"{self.max_per_img}"
            )

    @classmethod
    def from_any(cls, cfg: TestConfig | Mapping[str, Any] | None) -> TestConfig:
        """Accept a TestConfig, a mapping of its fields, or None (defaults)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ValueError(f"test_cfg must be a TestConfig or a mapping, got {type(cfg)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown test_cfg keys {unknown}; valid keys are {sorted(known)}")
        return cls(**cfg)


def postprocess_image(
    cls_logits: Sequence[Tensor],
    box_deltas: Sequence[Tensor],
    anchors: Sequence[Tensor],
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    cfg: TestConfig,
) -> dict[str, Tensor]:
    """Detections of one image from per-level head outputs.

    Args:
        cls_logits: per level, (A_l, C) classification logits (sigmoid scores).
        box_deltas: per level, (A_l, 4) regression deltas.
        anchors: per level, (A_l, 4) anchors lined up with the rows above.
        image_size: (height, width) of the unpadded image; boxes are clipped to it.
        box_coder: decodes deltas against anchors.
        cfg: thresholds and counts.

    Returns:
        ``boxes (K, 4)`` in the input image's pixels, ``scores (K,)`` sorted descending,
        ``labels (K,)`` long in ``0..C-1``, K <= ``cfg.max_per_img``.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for logits, deltas, level_anchors in zip(cls_logits, box_deltas, anchors, strict=True):
        num_classes = logits.shape[-1]
        scores = torch.sigmoid(logits).reshape(-1)
        keep = scores > cfg.score_thr
        candidate_ids = keep.nonzero().squeeze(1)
        scores = scores[candidate_ids]
        if scores.numel() > cfg.pre_nms_topk:
            scores, top = scores.topk(cfg.pre_nms_topk)
            candidate_ids = candidate_ids[top]
        # Flattened (anchor, class) index back to its anchor row and class column.
        anchor_ids = torch.div(candidate_ids, num_classes, rounding_mode="floor")
        all_labels.append(candidate_ids % num_classes)
        all_scores.append(scores)
        all_boxes.append(box_coder.decode(deltas[anchor_ids], level_anchors[anchor_ids]))
    boxes = clip_boxes_to_image(torch.cat(all_boxes), image_size)
    scores = torch.cat(all_scores)
    labels = torch.cat(all_labels)
    keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
