"""R-CNN delta coding of boxes relative to anchors.

For an anchor with centre (ax, ay) and size (aw, ah) and a box (gx, gy, gw, gh):

    dx = (gx - ax) / aw,  dy = (gy - ay) / ah,  dw = log(gw / aw),  dh = log(gh / ah),

then every delta is normalised as (d - mean) / std. Widths are ``x2 - x1`` (no ``+ 1``),
as in mmdetection v2 and torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder"]

# Default clamp on dw, dh: no decoded box grows past 1000/16 times its anchor (mmdetection's
# and torchvision's value), which keeps exp() finite for wild early-training predictions.
DEFAULT_WH_CLIP = math.log(1000.0 / 16)


def _check_quad(name: str, values: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 4:
        raise ValueError(f"BoxCoder {name} needs 4 values (x, y, w, h), got {len(values)}")
    return values  # type: ignore[return-value]


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return x1 + 0.5 * w, y1 + 0.5 * h, w, h


class BoxCoder:
    """Encode boxes as normalised deltas against anchors and decode them back.

    Args:
        means: offsets subtracted from (dx, dy, dw, dh) after encoding.
        stds: scales dividing (dx, dy, dw, dh) after encoding; must be positive.
        wh_clip: ``decode`` clamps dw and dh (after de-normalising) to
            ``[-wh_clip, wh_clip]``, as mmdetection does (``max_ratio``).
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        wh_clip: float = DEFAULT_WH_CLIP,
    ) -> None:
        self.means = _check_quad("means", means)
        self.stds = _check_quad("stds", stds)
        if min(self.stds) <= 0:
            raise ValueError(f"BoxCoder stds must be positive, got {self.stds}")
        if not wh_clip > 0:
            raise ValueError(f"BoxCoder wh_clip must be positive, got {wh_clip}")
        self.wh_clip = float(wh_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(means={self.means}, stds={self.stds}, wh_clip={self.wh_clip:.4f})"

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas that turn ``anchors`` into ``boxes``.

        Args:
            boxes: (..., 4) target boxes (x1, y1, x2, y2) with positive width and height
                (a zero-size box encodes to -inf; datasets drop such boxes).
            anchors: (..., 4) anchors, broadcastable against ``boxes``.

        Returns:
            (..., 4) normalised deltas (dx, dy, dw, dh), the broadcast shape.
        """
        gx, gy, gw, gh = _centre_size(boxes)
        ax, ay, aw, ah = _centre_size(anchors)
        deltas = torch.stack(
            ((gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)), dim=-1
        )
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes that ``deltas`` make of ``anchors``; differentiable in ``deltas``.

        Args:
            deltas: (..., 4) normalised deltas (dx, dy, dw, dh).
            anchors: (..., 4) anchors (x1, y1, x2, y2), broadcastable against ``deltas``.

        Returns:
            (..., 4) boxes (x1, y1, x2, y2), the broadcast shape.
        """
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dx, dy, dw, dh = deltas.unbind(-1)
        dw = dw.clamp(min=-self.wh_clip, max=self.wh_clip)
        dh = dh.clamp(min=-self.wh_clip, max=self.wh_clip)
        ax, ay, aw, ah = _centre_size(anchors.to(deltas.dtype))
        cx = ax + dx * aw
        cy = ay + dy * ah
        half_w = 0.5 * aw * torch.exp(dw)
        half_h = 0.5 * ah * torch.exp(dh)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
