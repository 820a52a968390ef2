"""Greedy non-maximum suppression in pure torch, with torchvision's kernel as a fast path.

Semantics (those of torchvision and mmcv): visit boxes by decreasing score, keep a box
unless a kept box overlaps it with IoU strictly greater than ``iou_threshold``. Equal
scores are visited in input order (a stable sort), so the result is deterministic.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from torchvision.ops import nms as _torchvision_nms
except Exception:  # absent, or built for another torch (its C++ ops then fail to load)
    _torchvision_nms = None

__all__ = ["nms", "batched_nms", "torchvision_available"]

# Rows of the IoU matrix computed at once: bounds the float temporary to _CHUNK * N values
# while the boolean suppression matrix (N * N bytes) is what is kept.
_CHUNK = 1024


def torchvision_available() -> bool:
    """Whether the torchvision kernel (the optional fast path) could be imported."""
    return _torchvision_nms is not None


def _check_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms needs boxes of shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms needs one score per box: boxes {tuple(boxes.shape)}, scores {tuple(scores.shape)}"
        )
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"nms iou_threshold must lie in [0, 1], got {iou_threshold}")


def _suppression_matrix(boxes: Tensor, iou_threshold: float, groups: Tensor | None) -> Tensor:
    """(N, N) bool: entry (i, j) says box i would suppress box j (ignoring the order).

    The IoU is ``ops.boxes.box_iou``'s, written out with in-place ops: this is the hot
    spot of inference (about 3x faster than building the pairwise tensors of ``box_iou``).
    """
    if not boxes.is_floating_point() or boxes.dtype in (torch.float16, torch.bfloat16):
        boxes = boxes.float()  # half precision rounds IoUs near the threshold
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    rows = []
    for start in range(0, boxes.shape[0], _CHUNK):
        part = slice(start, start + _CHUNK)
        w = torch.minimum(x2[part, None], x2[None]).sub_(torch.maximum(x1[part, None], x1[None]))
        h = torch.minimum(y2[part, None], y2[None]).sub_(torch.maximum(y1[part, None], y1[None]))
        inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
        # Two empty boxes have union 0 and intersection 0: any positive floor gives IoU 0.
        union = (area[part, None] + area[None]).sub_(inter).clamp_(min=1e-7)
        over = inter.div_(union) > iou_threshold
        if groups is not None:
            over &= groups[part, None] == groups[None, :]
        rows.append(over)
    return torch.cat(rows)


def _greedy(over: Tensor) -> Tensor:
    """Greedy scan of a suppression matrix (N, N) whose rows are in visiting order.

    Returns the kept row indices (K,) long, in visiting order. The scan is sequential by
    nature, so it runs on the CPU (as the CUDA kernels of torchvision and mmcv finish on the
    host); a kept box ORs its row into the removed set, O(N) per kept box.
    """
    over = over.cpu()
    removed = torch.zeros(over.shape[0], dtype=torch.bool)
    keep = []
    for i in range(over.shape[0]):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return torch.tensor(keep, dtype=torch.long)


def _nms_torch(
    boxes: Tensor, scores: Tensor, iou_threshold: float, groups: Tensor | None
) -> Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_groups = None if groups is None else groups[order]
    over = _suppression_matrix(boxes[order], iou_threshold, sorted_groups)
    return order[_greedy(over).to(order.device)]


def nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, *, use_torchvision: bool = True
) -> Tensor:
    """Greedy NMS.

    Args:
        boxes: (N, 4) boxes (x1, y1, x2, y2).
        scores: (N,) scores.
        iou_threshold: a box is dropped when a kept, higher-scored box has IoU > this.
        use_torchvision: use torchvision's kernel when it is importable (tests switch it off).

    Returns:
        (K,) long indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    _check_inputs(boxes, scores, iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if use_torchvision and _torchvision_nms is not None:
        return _torchvision_nms(boxes, scores, float(iou_threshold))
    return _nms_torch(boxes, scores, float(iou_threshold), None)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    *,
    use_torchvision: bool = True,
) -> Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    The torchvision path uses the coordinate-offset trick (each category's boxes shifted by
    ``idx * (extent + 1)`` so categories cannot overlap; ``extent = max - min`` so negative
    coordinates are safe too). The pure-torch path masks the suppression matrix by category
    equality instead, which is the same result without the offsets' float32 rounding.

    Args:
        boxes: (N, 4) boxes (x1, y1, x2, y2).
        scores: (N,) scores.
        idxs: (N,) integer category of each box.
        iou_threshold: as in :func:`nms`.
        use_torchvision: as in :func:`nms`.

    Returns:
        (K,) long indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    _check_inputs(boxes, scores, iou_threshold)
    if idxs.shape != scores.shape:
        raise ValueError(
            f"batched_nms needs one category per box: boxes {tuple(boxes.shape)}, "
            f"idxs {tuple(idxs.shape)}"
        )
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if use_torchvision and _torchvision_nms is not None:
        extent = boxes.max() - boxes.min() + 1
        shifted = boxes + (idxs.to(boxes) * extent)[:, None]
        return _torchvision_nms(shifted, scores, float(iou_threshold))
    return _nms_torch(boxes, scores, float(iou_threshold), idxs)
