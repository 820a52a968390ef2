"""Box primitives in pure torch, one contract: boxes are (x1, y1, x2, y2) in pixels.

Pairwise functions take (N, 4) and (M, 4) and return (N, M); the ``elementwise_``
variants take two (N, 4) tensors and return (N,). Everything is differentiable and
device-agnostic; no function here imports a config or a logger.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "box_xywh_to_xyxy",
    "box_xyxy_to_xywh",
    "clip_boxes_to_image",
]

# Guards divisions by an area that is zero for degenerate boxes.
_EPS = 1e-7


def box_area(boxes: Tensor) -> Tensor:
    """Area of boxes (N, 4) -> (N,); degenerate boxes give 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _pairwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair: boxes1 (N, 4), boxes2 (M, 4) -> (N, M)."""
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    return inter / union.clamp(min=_EPS)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of every pair: (N, 4), (M, 4) -> (N, M), values in [-1, 1]."""
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    iou = inter / union.clamp(min=_EPS)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=_EPS)


def _elementwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    if boxes1.shape != boxes2.shape or boxes1.shape[-1] != 4:
        raise ValueError(
            f"elementwise box ops need two (N, 4) tensors, got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows: (N, 4), (N, 4) -> (N,)."""
    inter, union = _elementwise_inter_union(boxes1, boxes2)
    return inter / union.clamp(min=_EPS)


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matching rows: (N, 4), (N, 4) -> (N,), values in [-1, 1]."""
    inter, union = _elementwise_inter_union(boxes1, boxes2)
    iou = inter / union.clamp(min=_EPS)
    lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=_EPS)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) corners -> (..., 4) centre and size."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre and size -> (..., 4) corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """COCO (x, y, w, h) (..., 4) -> corners (..., 4)."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """Corners (..., 4) -> COCO (x, y, w, h) (..., 4)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip (..., 4) boxes to an image of size (height, width)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
