"""Per-positive localisation errors: IoU, GIoU, smooth L1 and L1.

Each error maps P matched (prediction, target) pairs to P non-negative errors, one per positive,
so that a ranking loss can weigh them by rank (aLRP's Eloc) and a score-based loss can sum them.
The class attribute ``space`` tells the caller what to feed: decoded boxes (x1, y1, x2, y2) in
pixels for "boxes", box-coder deltas for "deltas".
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from alrp_lab.ops.boxes import elementwise_box_iou, elementwise_generalized_box_iou

__all__ = [
    "BoxError",
    "IoUError",
    "GIoUError",
    "SmoothL1Error",
    "L1Error",
    "BOX_ERRORS",
    "build_box_error",
]


def _check_pairs(pred: Tensor, target: Tensor, space: str) -> None:
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[-1] != 4:
        raise ValueError(
            f"a box error needs two (P, 4) tensors of {space}, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def _check_tau(tau: float) -> float:
    # tau = 1 would divide by zero; tau < 0 would shrink errors below the IoU Loss.
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must lie in [0, 1), got {tau}; the paper uses 0.5 (0.7 for an RPN)")
    return float(tau)


class BoxError(nn.Module):
    """Base of the localisation errors: forward(pred (P, 4), target (P, 4)) -> (P,)."""

    space: ClassVar[str]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class IoUError(BoxError):
    """Eloc = (1 - IoU) / (1 - tau) (SPEC section 1); not clipped, so IoU < tau gives > 1.

    With tau = 0 it is the plain IoU Loss, 1 - IoU.
    """

    space: ClassVar[str] = "boxes"

    def __init__(self, tau: float = 0.5) -> None:
        super().__init__()
        self.tau = _check_tau(tau)

    def forward(self, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """pred_boxes (P, 4), target_boxes (P, 4), x1 y1 x2 y2 -> Eloc (P,) in [0, 1/(1-tau)]."""
        _check_pairs(pred_boxes, target_boxes, "boxes")
        return (1.0 - elementwise_box_iou(pred_boxes, target_boxes)) / (1.0 - self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class GIoUError(BoxError):
    """Eloc = ((1 - GIoU) / 2) / (1 - tau) (SPEC section 1), i.e. 1 - GIoU at tau = 0.5.

    The halving maps GIoU's [-1, 1] onto [0, 1] before the tau normalisation; not clipped.
    """

    space: ClassVar[str] = "boxes"

    def __init__(self, tau: float = 0.5) -> None:
        super().__init__()
        self.tau = _check_tau(tau)

    def forward(self, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """pred_boxes (P, 4), target_boxes (P, 4), x1 y1 x2 y2 -> Eloc (P,) in [0, 1/(1-tau)]."""
        _check_pairs(pred_boxes, target_boxes, "boxes")
        giou = elementwise_generalized_box_iou(pred_boxes, target_boxes)
        return ((1.0 - giou) / 2.0) / (1.0 - self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


COORD_REDUCTIONS = ("sum", "mean")


def _check_reduction(coord_reduction: str) -> str:
    if coord_reduction not in COORD_REDUCTIONS:
        raise ValueError(
            f"coord_reduction must be one of {', '.join(COORD_REDUCTIONS)}, got {coord_reduction!r}"
        )
    return coord_reduction


def _reduce_coords(per_coord: Tensor, coord_reduction: str) -> Tensor:
    """(P, 4) -> (P,): the sum over the 4 coordinates, or their mean."""
    return per_coord.mean(dim=-1) if coord_reduction == "mean" else per_coord.sum(dim=-1)


class SmoothL1Error(BoxError):
    """Smooth L1 of box-coder deltas over the 4 coordinates.

    Per coordinate: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta; beta = 0 is L1.
    ``coord_reduction``: ``"sum"`` (mmdetection's heads that divide by the number of
    positives) or ``"mean"`` (the authors' AP Loss heads, which call mmdetection's
    ``SmoothL1Loss`` with its default mean over every element: a quarter of the sum).
    """

    space: ClassVar[str] = "deltas"

    def __init__(self, beta: float = 1.0, coord_reduction: str = "sum") -> None:
        super().__init__()
        if not beta >= 0.0:
            raise ValueError(f"smooth L1 beta must be >= 0, got {beta} (0 gives plain L1)")
        self.beta = float(beta)
        self.coord_reduction = _check_reduction(coord_reduction)

    def forward(self, pred_deltas: Tensor, target_deltas: Tensor) -> Tensor:
        """pred_deltas (P, 4), target_deltas (P, 4) -> (P,)."""
        _check_pairs(pred_deltas, target_deltas, "deltas")
        per_coord = F.smooth_l1_loss(pred_deltas, target_deltas, reduction="none", beta=self.beta)
        return _reduce_coords(per_coord, self.coord_reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, coord_reduction={self.coord_reduction!r}"


class L1Error(BoxError):
    """L1 distance of box-coder deltas over the 4 coordinates (``coord_reduction`` as for
    :class:`SmoothL1Error`)."""

    space: ClassVar[str] = "deltas"

    def __init__(self, coord_reduction: str = "sum") -> None:
        super().__init__()
        self.coord_reduction = _check_reduction(coord_reduction)

    def forward(self, pred_deltas: Tensor, target_deltas: Tensor) -> Tensor:
        """pred_deltas (P, 4), target_deltas (P, 4) -> (P,)."""
        _check_pairs(pred_deltas, target_deltas, "deltas")
        return _reduce_coords((pred_deltas - target_deltas).abs(), self.coord_reduction)

    def extra_repr(self) -> str:
        return f"coord_reduction={self.coord_reduction!r}"


BOX_ERRORS: dict[str, type[BoxError]] = {
    "iou": IoUError,
    "giou": GIoUError,
    "smooth_l1": SmoothL1Error,
    "l1": L1Error,
}


def build_box_error(name: str, **kwargs: Any) -> BoxError:
    """Build a box error by its config name: iou, giou, smooth_l1 or l1.

    Raises:
        ValueError: for an unknown name or an argument the chosen error does not take.
    """
    if name not in BOX_ERRORS:
        raise ValueError(f"unknown box error {name!r}; choose one of {sorted(BOX_ERRORS)}")
    cls = BOX_ERRORS[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError:
        accepted = list(signature.parameters)
        raise ValueError(
            f"box error {name!r} does not take {sorted(kwargs)}; it accepts {accepted or 'none'}"
        ) from None
    return cls(**kwargs)
