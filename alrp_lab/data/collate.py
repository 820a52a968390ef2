"""Batching for detection: images of different sizes share one zero-padded tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["collate_detection"]


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Any]]], size_divisor: int = 32
) -> tuple[Tensor, list[dict[str, Any]]]:
    """Stack ``(image (3, H_i, W_i), target)`` pairs into ``(images (B, 3, H, W), targets)``.

    Each image sits at the top-left corner of a zero canvas whose height and width are the
    batch maxima rounded up to a multiple of ``size_divisor`` (the FPN's largest stride, so
    every level's feature map aligns). Zero is the mean colour of a normalised image. Boxes
    need no change; each target's ``size`` still gives its image's valid (h, w).
    Use ``functools.partial(collate_detection, size_divisor=...)`` for another divisor.
    """
    if len(batch) == 0:
        raise ValueError("collate_detection got an empty batch; check the data set's length")
    if size_divisor < 1:
        raise ValueError(f"size_divisor must be a positive integer, got {size_divisor}")
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    shapes = {tuple(img.shape[:-2]) for img in images}
    if len(shapes) != 1 or any(img.dim() != 3 for img in images):
        raise ValueError(
            "collate_detection needs images shaped (C, H, W) with one C, got "
            f"{[tuple(img.shape) for img in images]}; end the transforms with ToTensor"
        )
    max_h = max(int(img.shape[1]) for img in images)
    max_w = max(int(img.shape[2]) for img in images)
    pad_h = -(-max_h // size_divisor) * size_divisor
    pad_w = -(-max_w // size_divisor) * size_divisor
    out = images[0].new_zeros((len(images), images[0].shape[0], pad_h, pad_w))
    for i, img in enumerate(images):
        out[i, :, : img.shape[1], : img.shape[2]].copy_(img)
    return out, targets
