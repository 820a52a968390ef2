"""Sigmoid (binary) cross entropy over flattened (anchor, class) examples.

Every example is one logit with a label: 1 positive, 0 negative, -1 ignored (docs/interfaces.md).
The focal loss reuses the helpers here, since it is this loss times a modulating factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["check_logits_labels", "sigmoid_cross_entropy", "CrossEntropyLoss"]

_REDUCTIONS = ("sum", "mean", "none")
_NORMALIZERS = ("positives", "mean")


def check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    """Raise a ValueError naming the fix when logits (M,) and labels (M,) break the contract.

    Labels must be an integer (or bool) tensor of the logits' shape with values in {1, 0, -1}.
    """
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise ValueError("logits and labels must be torch tensors")
    if logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must have the same shape (M,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}; flatten the (anchor, class) pairs of both the same way"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be an integer tensor with 1 (positive), 0 (negative), -1 (ignored), "
            f"got {labels.dtype}; cast them with .long()"
        )
    if labels.numel() and ((labels != 1) & (labels != 0) & (labels != -1)).any():
        raise ValueError(
            "labels may only hold 1 (positive), 0 (negative) or -1 (ignored); "
            f"found {sorted(set(labels.unique().tolist()) - {1, 0, -1})}"
        )


def signed_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Fold the label into the logit so one formula serves positives and negatives.

    Args:
        logits: (M,) raw scores.
        labels: (M,) 1 / 0 / -1.

    Returns:
        z: (M,) ``logits`` for positives, ``-logits`` for negatives and 0 for ignored entries,
            so that ``sigmoid(z)`` is the probability of the correct label.
        valid: (M,) bool, True where the label is not ignored.
    """
    valid = labels >= 0
    z = torch.where(labels > 0, logits, -logits)
    # Zeroing ignored inputs (not just their losses) keeps an inf or NaN logit there from
    # turning the backward of the masked-out branch into NaN.
    z = torch.where(valid, z, torch.zeros_like(z))
    return z, valid


def reduce_loss(loss: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Reduce an elementwise loss (M,) that is already 0 on ignored entries.

    "mean" divides by the number of non-ignored entries (at least 1, so an all-ignored or empty
    batch gives 0, not NaN).
    """
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)


def check_reduction(reduction: str) -> None:
    """Raise a ValueError listing the valid reductions."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def sigmoid_cross_entropy(logits: Tensor, labels: Tensor, reduction: str = "sum") -> Tensor:
    """Binary cross entropy of sigmoid scores: -log p for positives, -log(1 - p) for negatives.

    Computed as -logsigmoid(z) on the signed logit, which stays exact for huge logits and gives
    0 (with zero gradient) for an infinite logit of the correct sign.

    Args:
        logits: (M,) raw scores.
        labels: (M,) int, 1 positive, 0 negative, -1 ignored (contributes 0 and no gradient).
        reduction: "sum", "mean" (over non-ignored entries) or "none" (returns (M,)).

    Returns:
        A scalar, or (M,) for "none".
    """
    check_reduction(reduction)
    check_logits_labels(logits, labels)
    z, valid = signed_logits(logits, labels)
    loss = torch.where(valid, -F.logsigmoid(z), torch.zeros_like(z))
    return reduce_loss(loss, valid, reduction)


class CrossEntropyLoss(nn.Module):
    """Sigmoid cross entropy summed over non-ignored examples and normalised.

    normalizer="positives" divides by max(1, number of positives), as a dense detector
    normalises; "mean" divides by the number of non-ignored examples (Appendix A's toy example).
    """

    def __init__(self, normalizer: str = "positives") -> None:
        super().__init__()
        if normalizer not in _NORMALIZERS:
            raise ValueError(f"normalizer must be one of {_NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer

    def forward(
        self, logits: Tensor, labels: Tensor, avg_factor: Tensor | float | None = None
    ) -> Tensor:
        """logits (M,), labels (M,) -> scalar loss.

        ``avg_factor`` replaces the normalizer's divisor when given.
        """
        if avg_factor is not None:
            return sigmoid_cross_entropy(logits, labels, reduction="sum") / avg_factor
        if self.normalizer == "mean":
            return sigmoid_cross_entropy(logits, labels, reduction="mean")
        total = sigmoid_cross_entropy(logits, labels, reduction="sum")
        # A tensor clamp, not max(1, int): no host sync per iteration.
        return total / (labels == 1).sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"normalizer={self.normalizer!r}"
