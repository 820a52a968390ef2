"""Region proposal network: class-agnostic objectness and boxes over every pyramid level.

With aLRP Loss (the paper's Appendix G.4) the RPN ranks all anchors of the batch, positives
from the 0.7 / 0.3 max-IoU rule, and Eloc uses tau = 0.7; the baseline trains sigmoid cross
entropy and L1 on 256 random anchors per image. At train and test time alike, proposals are
the per-level top-k anchors by objectness, decoded, clipped, NMS'd per level at 0.7 and cut
to ``num_proposals`` per image; they carry no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alrp_lab.assigners.result import AssignResult
from alrp_lab.losses import BoxError, SelfBalance, alrp_loss, sigmoid_cross_entropy
from alrp_lab.losses.ranking import check_delta
from alrp_lab.models.dense_loss import build_dense_targets
from alrp_lab.models.precision import float32_loss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import clip_boxes_to_image
from alrp_lab.ops.nms import batched_nms

__all__ = [
    "ProposalConfig",
    "RPNHead",
    "RPNLoss",
    "RegionProposalNetwork",
    "RPN_LOSSES",
    "localisation_errors",
]

RPN_LOSSES = ("alrp", "ce")


@dataclass(frozen=True)
class ProposalConfig:
    """How anchors become proposals.

    Attributes:
        pre_nms_topk: anchors kept per level (highest objectness) before NMS at test time.
        nms_iou: NMS IoU within a level.
        num_proposals: proposals kept per image after NMS (all levels together).
        min_size: proposals narrower or shorter than this (pixels) are dropped.
        train_pre_nms_topk: ``pre_nms_topk`` in training (mmdetection's Faster R-CNN: 2000,
            1000 at test time); None: the same as at test time.
    """

    pre_nms_topk: int = 1000
    nms_iou: float = 0.7
    num_proposals: int = 1000
    min_size: float = 1e-3
    train_pre_nms_topk: int | None = None

    def __post_init__(self) -> None:
        if self.pre_nms_topk < 1 or self.num_proposals < 1:
            raise ValueError(
                f"pre_nms_topk and num_proposals must be >= 1, got {self.pre_nms_topk} and "
                f"{self.num_proposals}"
            )
        if self.train_pre_nms_topk is not None and self.train_pre_nms_topk < 1:
            raise ValueError(f"train_pre_nms_topk must be >= 1, got {self.train_pre_nms_topk}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"the RPN's nms_iou must lie in (0, 1], got {self.nms_iou}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 objectness and box-delta outputs.

    Args:
        in_channels: channels of every pyramid level.
        num_anchors: anchors per location (A).
        feat_channels: channels of the shared convs.
        num_convs: shared 3x3 convs (1 in Faster R-CNN).
        prior_prob: initial objectness of every anchor (0.01 for aLRP, as the authors'
            RPN); None starts the logits at 0 (mmdetection's cross-entropy RPN).

    ``forward([P_l (B, in, H_l, W_l)]) -> (logits [(B, H_l*W_l*A, 1)],
    deltas [(B, H_l*W_l*A, 4)])``, rows ordered (y, x, anchor) like ``AnchorGenerator``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        feat_channels: int = 256,
        num_convs: int = 1,
        prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        if num_convs < 0 or feat_channels < 1 or num_anchors < 1:
            raise ValueError(
                f"RPNHead needs num_convs >= 0, feat_channels >= 1 and num_anchors >= 1, got "
                f"{num_convs}, {feat_channels}, {num_anchors}"
            )
        if prior_prob is not None and not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must lie in (0, 1) or be None, got {prior_prob}")
        self.num_anchors = num_anchors
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [
                nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        last = feat_channels if num_convs > 0 else in_channels
        self.objectness = nn.Conv2d(last, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(last, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        if prior_prob is not None:
            nn.init.constant_(self.objectness.bias, -math.log((1.0 - prior_prob) / prior_prob))

    @staticmethod
    def _flatten(x: Tensor, k: int) -> Tensor:
        """(B, A*K, H, W) -> (B, H*W*A, K)."""
        b, _, h, w = x.shape
        return x.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in features:
            x = self.convs(x)
            logits.append(self._flatten(self.objectness(x), 1))
            deltas.append(self._flatten(self.bbox_pred(x), 4))
        return logits, deltas


def localisation_errors(
    box_error: BoxError,
    box_coder: BoxCoder,
    pred_deltas: Tensor,
    references: Tensor,
    gt_boxes: Tensor,
) -> Tensor:
    """Per-positive box errors, in the space the error asks for (shared with the RoI head).

    Args:
        box_error: IoU/GIoU errors compare decoded boxes; L1/smooth L1 compare deltas.
        box_coder: decodes ``pred_deltas`` or encodes ``gt_boxes`` against ``references``.
        pred_deltas: (P, 4) predicted deltas; references: (P, 4) anchors or RoIs;
        gt_boxes: (P, 4) matched ground truths.

    Returns:
        (P,) errors, differentiable in ``pred_deltas``.
    """
    gt_boxes = gt_boxes.to(pred_deltas.dtype)
    if box_error.space == "boxes":
        return box_error(box_coder.decode(pred_deltas, references), gt_boxes)
    return box_error(pred_deltas, box_coder.encode(gt_boxes, references.to(pred_deltas.dtype)))


class RPNLoss(nn.Module):
    """The RPN's loss: aLRP over all anchors, or sampled sigmoid CE + a box error.

    Args:
        cls_loss: ``"alrp"`` (every (anchor, objectness) pair of the batch ranked together;
            the box error is Eloc, e.g. ``GIoUError(tau=0.7)``) or ``"ce"`` (the baseline).
        box_error: a ``BoxError``; the baseline's is ``L1Error`` on deltas.
        balance: weight of the localisation term (the RPN's SB, or a constant).
        box_coder: decodes (IoU errors) or encodes (delta errors) against the anchors.
        sampler: the baseline's ``RandomSampler(256, 0.5)``; required for ``"ce"``, unused
            by aLRP (the paper removes sampling).
        delta: smoothing of aLRP's step function.

    Baseline normalisation is mmdetection's: both terms are sums over the sampled anchors
    divided by their number (not by the positives). aLRP's terms are SPEC section 1's.
    """

    def __init__(
        self,
        cls_loss: str,
        box_error: BoxError,
        balance: SelfBalance,
        box_coder: BoxCoder,
        *,
        sampler: RandomSampler | None = None,
        delta: float = 1.0,
    ) -> None:
        super().__init__()
        if cls_loss not in RPN_LOSSES:
            raise ValueError(f"unknown RPN loss {cls_loss!r}; choose one of {RPN_LOSSES}")
        if cls_loss == "ce" and sampler is None:
            raise ValueError("the cross-entropy RPN needs a sampler, e.g. RandomSampler(256, 0.5)")
        if not isinstance(box_error, BoxError):
            raise ValueError("box_error must be a BoxError (alrp_lab.losses.build_box_error)")
        self.cls_loss = cls_loss
        self.box_error = box_error
        self.balance = balance
        self.box_coder = box_coder
        self.sampler = sampler if cls_loss == "ce" else None
        self.delta = check_delta(delta)

    @float32_loss
    def forward(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        assign_results: Sequence[AssignResult],
        gt_boxes: Sequence[Tensor],
    ) -> dict[str, Tensor | int]:
        """Loss of a batch.

        Args:
            logits: (B, A, 1) objectness logits; deltas: (B, A, 4); anchors: (A, 4).
            assign_results: B assignments (``matched_gt`` (A,)).
            gt_boxes: B tensors (G_b, 4).

        Returns:
            ``loss`` (cls + weight * loc), ``loss_cls``, ``loss_loc`` (detached, unweighted),
            ``num_pos`` (int; for the baseline, the sampled positives).
        """
        if self.sampler is not None:
            assign_results = [self.sampler.subsample(r) for r in assign_results]
        matched = torch.stack([r.matched_gt.to(logits.device) for r in assign_results])
        gt_labels = [torch.zeros(b.shape[0], dtype=torch.long, device=b.device) for b in gt_boxes]
        targets = build_dense_targets(matched, gt_boxes, gt_labels, 1)
        flat_logits = logits.reshape(-1)
        flat_labels = targets.labels.reshape(-1)
        # Exact zeros that keep every output on the graph (DDP needs a gradient everywhere).
        zero = flat_logits.sum() * 0.0 + deltas.sum() * 0.0
        if targets.num_pos > 0:
            errors = localisation_errors(
                self.box_error,
                self.box_coder,
                deltas[targets.pos_image, targets.pos_anchor],
                anchors[targets.pos_anchor],
                targets.pos_gt_boxes,
            )
        if self.cls_loss == "alrp":
            if targets.num_pos == 0:
                cls = loc = zero  # SPEC: no positives, no ranking loss and no gradient
            else:
                cls, loc = alrp_loss(flat_logits, flat_labels, errors, delta=self.delta)
        else:
            num_samples = (flat_labels >= 0).sum().clamp(min=1)
            cls = sigmoid_cross_entropy(flat_logits, flat_labels, "sum") / num_samples + zero
            loc = errors.sum() / num_samples + zero if targets.num_pos > 0 else zero
        return {
            "loss": cls + self.balance(loc),
            "loss_cls": cls.detach(),
            "loss_loc": loc.detach(),
            "num_pos": targets.num_pos,
        }


class RegionProposalNetwork(nn.Module):
    """Head, anchors, assignment, loss and proposal selection of the RPN.

    Args:
        head: an ``RPNHead`` whose ``num_anchors`` matches the anchor generator.
        anchor_generator: anchors per level (3 ratios x 1 scale in Faster R-CNN).
        assigner: ``assign(anchors (A, 4), gt_boxes (G, 4), num_anchors_per_level)``; the
            paper's is ``MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3)``.
        loss: an ``RPNLoss`` (its box coder also decodes the proposals).
        proposal_cfg: ``ProposalConfig``.
    """

    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        assigner: object,
        loss: RPNLoss,
        proposal_cfg: ProposalConfig | None = None,
    ) -> None:
        super().__init__()
        if head.num_anchors != anchor_generator.num_anchors_per_location:
            raise ValueError(
                f"the RPN head predicts {head.num_anchors} anchors per location but the anchor "
                f"generator makes {anchor_generator.num_anchors_per_location}"
            )
        self.head = head
        self.anchor_generator = anchor_generator
        self.assigner = assigner
        self.loss = loss
        self.box_coder = loss.box_coder  # shared with the loss, which encodes the targets
        self.proposal_cfg = proposal_cfg if proposal_cfg is not None else ProposalConfig()

    @property
    def self_balance(self) -> SelfBalance:
        """The RPN's localisation weight (its own SB, or a constant)."""
        return self.loss.balance

    @torch.no_grad()
    def propose(
        self,
        logits: Sequence[Tensor],
        deltas: Sequence[Tensor],
        anchors: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        """Proposals of every image.

        Args:
            logits: per level (B, A_l, 1); deltas: per level (B, A_l, 4);
            anchors: per level (A_l, 4); image_sizes: B (h, w) to clip to.

        Returns:
            B tensors (K_b, 4), K_b <= ``num_proposals``, by decreasing objectness.
        """
        cfg = self.proposal_cfg
        topk = cfg.pre_nms_topk
        if self.training and cfg.train_pre_nms_topk is not None:
            topk = cfg.train_pre_nms_topk
        out = []
        for b, size in enumerate(image_sizes):
            boxes, scores, levels = [], [], []
            for level, (lg, dl, an) in enumerate(zip(logits, deltas, anchors, strict=True)):
                level_scores = lg[b, :, 0]
                k = min(topk, level_scores.numel())
                level_scores, top = level_scores.topk(k)
                boxes.append(self.box_coder.decode(dl[b, top], an[top]))
                scores.append(level_scores)
                levels.append(torch.full_like(top, level))
            all_boxes = clip_boxes_to_image(torch.cat(boxes), size)
            all_scores, all_levels = torch.cat(scores), torch.cat(levels)
            wh = all_boxes[:, 2:] - all_boxes[:, :2]
            big = (wh > cfg.min_size).all(dim=1)
            all_boxes, all_scores, all_levels = all_boxes[big], all_scores[big], all_levels[big]
            keep = batched_nms(all_boxes, all_scores, all_levels, cfg.nms_iou)
            out.append(all_boxes[keep[: cfg.num_proposals]])
        return out

    def forward(
        self,
        features: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        gt_boxes: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor | int] | None]:
        """Proposals, and the loss when ``gt_boxes`` are given.

        Args:
            features: pyramid levels (B, C, H_l, W_l), one per anchor stride.
            image_sizes: B (h, w) of the unpadded images.
            gt_boxes: training only, B tensors (G_b, 4); G_b may be 0.

        Returns:
            (proposals: B tensors (K_b, 4) detached, losses as ``RPNLoss`` returns or None).
        """
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(
            [tuple(f.shape[-2:]) for f in features],
            device=features[0].device,
            dtype=features[0].dtype,
        )
        proposals = self.propose(logits, deltas, anchors, image_sizes)
        if gt_boxes is None:
            return proposals, None
        all_anchors = torch.cat(anchors)
        num_per_level = [a.shape[0] for a in anchors]
        with torch.no_grad():
            assignments = [self.assigner.assign(all_anchors, g, num_per_level) for g in gt_boxes]
        losses = self.loss(
            torch.cat(logits, dim=1), torch.cat(deltas, dim=1), all_anchors, assignments, gt_boxes
        )
        return proposals, losses
