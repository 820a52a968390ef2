"""The loss of a dense (one-stage) detector head: classification + weighted localisation.

One object turns a batch of head outputs and per-image assignments into the loss of any of
the paper's set-ups: aLRP Loss, AP Loss, Focal Loss or cross entropy for the classifier, and
IoU, GIoU, smooth L1 or L1 for the boxes. Shared by RetinaNet and FoveaBox.

Examples are (anchor, class) pairs flattened image-major, then anchor, then class: a
positive anchor is positive for its ground truth's class and negative for every other
class, a background anchor negative for all, an ignored anchor ignored (-1) for all
(SPEC section 1). A positive anchor has exactly one positive class, so the positives of the
flattened logits come in (image, anchor) order; the localisation errors follow that order,
which is what ``alrp_loss`` requires of ``loc_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from alrp_lab.losses import (
    CLASSIFICATION_LOSSES,
    BoxError,
    CrossEntropyLoss,
    FocalLoss,
    SelfBalance,
    alrp_loss,
    ap_loss,
)
from alrp_lab.losses.global_batch import gather, gather_with_own_grad, global_batch_active
from alrp_lab.losses.ranking import check_delta
from alrp_lab.models.precision import float32_loss
from alrp_lab.ops.box_coder import BoxCoder

if TYPE_CHECKING:
    from alrp_lab.assigners import AssignResult

__all__ = [
    "CLS_LOSSES",
    "SCORE_NORMALIZERS",
    "DenseDetectionLoss",
    "DenseTargets",
    "build_dense_targets",
]

# The classification losses a dense head trains with: the losses package's registry.
CLS_LOSSES = tuple(CLASSIFICATION_LOSSES)
# What a score-based classifier's (Focal, CE) sum is divided by: max(1, positives), or
# positives plus images as mmdetection's FoveaBox head does (its avg_factor).
SCORE_NORMALIZERS = ("positives", "positives+images")


@dataclass(frozen=True)
class DenseTargets:
    """Training targets of a batch, everything in the flattened (image, anchor) order.

    Attributes:
        labels: (B, A, C) long in {1, 0, -1}.
        pos_image: (P,) long, image of each positive anchor.
        pos_anchor: (P,) long, anchor index of each positive.
        pos_gt_boxes: (P, 4) the matched ground-truth box of each positive.
    """

    labels: Tensor
    pos_image: Tensor
    pos_anchor: Tensor
    pos_gt_boxes: Tensor

    @property
    def num_pos(self) -> int:
        return int(self.pos_anchor.numel())


def build_dense_targets(
    matched_gt: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    num_classes: int,
) -> DenseTargets:
    """Per-example labels and the positives' boxes from per-image assignments.

    Args:
        matched_gt: (B, A) long; >= 0 the ground truth index within its image, -1
            background, -2 ignored (``AssignResult.matched_gt`` stacked).
        gt_boxes: B tensors (G_b, 4).
        gt_labels: B tensors (G_b,) long in ``0..num_classes-1``.
        num_classes: C.

    Returns:
        ``DenseTargets`` with labels (B, A, C) and the positives in row-major (b, a) order.
    """
    batch, num_anchors = matched_gt.shape
    device = matched_gt.device
    labels = torch.zeros(batch, num_anchors, num_classes, dtype=torch.long, device=device)
    labels[matched_gt == -2] = -1
    # nonzero is row-major, so positives come image by image, anchors ascending.
    pos_image, pos_anchor = (matched_gt >= 0).nonzero(as_tuple=True)
    sizes = torch.tensor([b.shape[0] for b in gt_boxes], dtype=torch.long, device=device)
    offsets = torch.cumsum(sizes, 0) - sizes
    flat_gt = offsets[pos_image] + matched_gt[pos_image, pos_anchor]
    all_labels = torch.cat([lab.to(device=device, dtype=torch.long) for lab in gt_labels])
    all_boxes = torch.cat([box.to(device) for box in gt_boxes])
    labels[pos_image, pos_anchor, all_labels[flat_gt]] = 1
    return DenseTargets(labels, pos_image, pos_anchor, all_boxes[flat_gt])


class DenseDetectionLoss(nn.Module):
    """Classification + weight x localisation for a dense head.

    Args:
        cls_loss: ``"alrp"``, ``"ap"``, ``"focal"`` or ``"ce"``.
        box_error: per-positive error (``alrp_lab.losses.build_box_error``); for aLRP it is
            Eloc, meant to be ``IoUError``/``GIoUError`` (delta errors run but are unbounded
            and not in the paper).
        balance: weight of the localisation term; a ``SelfBalance`` (SB, or with
            ``enabled=False`` the constant wr). ``None`` uses ``loc_weight``. The training loop
            feeds it (``balance.update(out["loss_cls"], out["loss_loc"])`` per iteration,
            ``balance.step_epoch()`` per epoch); this module only reads the weight.
        box_coder: decodes deltas to boxes (IoU/GIoU) or encodes targets (smooth L1/L1).
        alpha, gamma: Focal Loss parameters (``loss.alpha``, ``loss.gamma``).
        delta: smoothing of the step function of the ranking losses.
        interpolated: AP Loss only, the interpolated precision of the authors' code.
        loc_weight: constant localisation weight when ``balance`` is None.
        track_grad_balance: record sum |dL/ds| over negatives and positives at every
            backward (Figure 4); read with ``grad_balance()``.
        zero_target: aLRP only, the Appendix G.3 ablation (a positive's target 0).
        global_rank: aLRP and AP Loss, under torchrun: rank the examples of the whole global
            batch (``alrp_lab.losses.global_batch``) instead of this process's share; each
            process keeps the gradient of its own examples. Without a process group it
            changes nothing.
        score_normalizer: Focal / CE only, what the classification sum is divided by:
            ``"positives"``, max(1, num_pos) (RetinaNet); ``"positives+images"``, num_pos
            plus the batch's images (mmdetection's FoveaBox head).

    The localisation term is, per classifier: aLRP, the ranking-weighted L_loc of SPEC
    section 1; AP, the mean error over positives; Focal / CE, sum over positives / num_pos
    (the classification loss is normalised by ``score_normalizer``).
    """

    def __init__(
        self,
        cls_loss: str,
        box_error: BoxError,
        balance: SelfBalance | None = None,
        box_coder: BoxCoder | None = None,
        *,
        alpha: float = 0.25,
        gamma: float = 2.0,
        delta: float = 1.0,
        interpolated: bool = False,
        loc_weight: float = 1.0,
        track_grad_balance: bool = False,
        zero_target: bool = False,
        global_rank: bool = False,
        score_normalizer: str = "positives",
    ) -> None:
        super().__init__()
        if cls_loss not in CLS_LOSSES:
            raise ValueError(
                f"unknown classification loss {cls_loss!r}; choose one of {CLS_LOSSES}"
            )
        if not isinstance(box_error, BoxError) or box_error.space not in ("boxes", "deltas"):
            raise ValueError(
                "box_error must be a BoxError (build one with "
                "alrp_lab.losses.build_box_error('giou' | 'iou' | 'smooth_l1' | 'l1'))"
            )
        self.cls_loss = cls_loss
        self.box_error = box_error
        self.balance = balance
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.delta = check_delta(delta)
        self.interpolated = bool(interpolated)
        self.loc_weight = float(loc_weight)
        self.track_grad_balance = track_grad_balance
        self.zero_target = zero_target
        if global_rank and cls_loss not in ("alrp", "ap"):
            raise ValueError(
                f"global_rank ranks the global batch: it is for the ranking losses (alrp, ap), "
                f"not {cls_loss!r}"
            )
        self.global_rank = bool(global_rank)
        if score_normalizer not in SCORE_NORMALIZERS:
            raise ValueError(
                f"score_normalizer must be one of {SCORE_NORMALIZERS}, got {score_normalizer!r}"
            )
        self.score_normalizer = score_normalizer
        # Score-based classifiers: sum over non-ignored examples / score_normalizer's divisor,
        # which reaches the loss as its avg_factor.
        self._score_loss: nn.Module | None = None
        if cls_loss == "focal":
            self._score_loss = FocalLoss(alpha, gamma)
        elif cls_loss == "ce":
            self._score_loss = CrossEntropyLoss("positives")
        # Filled by the backward hook: 0-d tensors (neg sum, pos sum), read lazily so the hot
        # path never waits for the device.
        self._grad_sums: tuple[Tensor, Tensor] | None = None

    def _avg_factor(self, batch: int, num_pos: int) -> float | None:
        """The score-based classifier's divisor, or None for its own max(1, positives)."""
        if self.score_normalizer == "positives+images":
            return float(num_pos + batch)
        return None

    def grad_balance(self) -> float | None:
        """sum |dL/ds| over negatives / over positives from the latest backward.

        None when tracking is off, the batch had no positives, or no backward ran since.
        """
        if self._grad_sums is None:
            return None
        neg, pos = self._grad_sums
        pos_value = float(pos)
        return float(neg) / pos_value if pos_value > 0 else None

    def _localisation_errors(
        self, box_deltas: Tensor, anchors: Tensor, targets: DenseTargets
    ) -> Tensor:
        """Errors (P,) of the positives in flattened order."""
        pred = box_deltas[targets.pos_image, targets.pos_anchor]
        pos_anchors = anchors[targets.pos_anchor]
        gt = targets.pos_gt_boxes.to(pred.dtype)
        if self.box_error.space == "boxes":
            return self.box_error(self.box_coder.decode(pred, pos_anchors), gt)
        return self.box_error(pred, self.box_coder.encode(gt, pos_anchors))

    def _install_probe(self, flat_logits: Tensor, flat_labels: Tensor) -> None:
        def hook(grad: Tensor) -> None:
            magnitude = grad.detach().abs()
            self._grad_sums = (
                magnitude[flat_labels == 0].sum(),
                magnitude[flat_labels == 1].sum(),
            )

        flat_logits.register_hook(hook)

    @float32_loss
    def forward(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        assign_results: Sequence[AssignResult],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
    ) -> dict[str, Tensor | int]:
        """Loss of a batch.

        Args:
            cls_logits: (B, A, C) logits, anchors in the anchor generator's order.
            box_deltas: (B, A, 4) regression deltas.
            anchors: (A, 4) anchors shared by the batch.
            assign_results: B results, each with ``matched_gt`` (A,).
            gt_boxes: B tensors (G_b, 4); gt_labels: B tensors (G_b,) long.

        Returns:
            ``loss`` (scalar to backward: cls + weight * loc), ``loss_cls`` and ``loss_loc``
            (detached scalars, loc before weighting), ``num_pos`` (int); for aLRP with
            positives also ``eloc_mean`` and ``eloc_over_one`` (detached scalars: the mean
            Eloc of the positives and the fraction of them with Eloc > 1).
        """
        batch, num_anchors, num_classes = cls_logits.shape
        if box_deltas.shape != (batch, num_anchors, 4) or anchors.shape != (num_anchors, 4):
            raise ValueError(
                f"shape mismatch: cls_logits {tuple(cls_logits.shape)}, box_deltas "
                f"{tuple(box_deltas.shape)}, anchors {tuple(anchors.shape)}; expected (B, A, C), "
                f"(B, A, 4), (A, 4)"
            )
        if not len(assign_results) == len(gt_boxes) == len(gt_labels) == batch:
            raise ValueError(
                f"need one assignment, box set and label set per image (batch {batch}), got "
                f"{len(assign_results)}, {len(gt_boxes)}, {len(gt_labels)}"
            )
        matched_gt = torch.stack([r.matched_gt.to(cls_logits.device) for r in assign_results])
        targets = build_dense_targets(matched_gt, gt_boxes, gt_labels, num_classes)
        flat_logits = cls_logits.reshape(-1)
        flat_labels = targets.labels.reshape(-1)
        num_pos = targets.num_pos

        self._grad_sums = None
        if self.track_grad_balance and flat_logits.requires_grad and num_pos > 0:
            self._install_probe(flat_logits, flat_labels)

        # Zero built from the outputs keeps the graph connected (DDP needs every parameter
        # to receive a gradient) while contributing exact zeros.
        zero = flat_logits.sum() * 0.0 + box_deltas.sum() * 0.0
        if self.global_rank and global_batch_active():
            # Every process takes part in the gathers, positives or not, then decides on the
            # global batch's positives.
            errors = self._localisation_errors(box_deltas, anchors, targets)
            flat_logits = gather_with_own_grad(flat_logits)
            flat_labels = gather(flat_labels)
            errors = gather_with_own_grad(errors)
            num_pos = int((flat_labels == 1).sum())
        elif num_pos > 0:
            errors = self._localisation_errors(box_deltas, anchors, targets)
        if num_pos == 0:
            loc = zero
            if self._score_loss is None:
                cls = zero  # SPEC: no positives, no ranking loss and no gradient
            else:
                # Negatives still teach a score-based classifier (normalised by 1, or by the
                # images with "positives+images").
                cls = self._score_loss(flat_logits, flat_labels, self._avg_factor(batch, 0)) + zero
        elif self.cls_loss == "alrp":
            cls, loc = alrp_loss(
                flat_logits, flat_labels, errors, delta=self.delta, zero_target=self.zero_target
            )
        elif self.cls_loss == "ap":
            cls = ap_loss(
                flat_logits, flat_labels, delta=self.delta, interpolated=self.interpolated
            )
            loc = errors.mean()
        else:
            cls = self._score_loss(flat_logits, flat_labels, self._avg_factor(batch, num_pos))
            loc = errors.sum() / num_pos
        if self.global_rank and global_batch_active():
            # A process without positives of its own still sends (zero) gradients into its
            # box branch, which DDP waits for.
            cls, loc = cls + zero, loc + zero

        weighted_loc = self.balance(loc) if self.balance is not None else self.loc_weight * loc
        out = {
            "loss": cls + weighted_loc,
            "loss_cls": cls.detach(),
            "loss_loc": loc.detach(),
            "num_pos": num_pos,
        }
        if self.cls_loss == "alrp" and num_pos > 0:
            # Diagnostics for the training log: Eloc of a positive ranked above another
            # weighs in that one's classification gradient (SPEC section 1), and only Eloc
            # over 1 weighs more than a negative there.
            eloc = errors.detach()
            out["eloc_mean"] = eloc.mean()
            out["eloc_over_one"] = (eloc > 1).to(eloc.dtype).mean()
        return out

    def extra_repr(self) -> str:
        return (
            f"cls_loss={self.cls_loss!r}, delta={self.delta}, loc_weight={self.loc_weight}, "
            f"track_grad_balance={self.track_grad_balance}"
        )
