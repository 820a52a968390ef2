"""Faster R-CNN (Ren et al., 2015) with FPN, trained by aLRP Loss on both stages (Table 8).

The paper's set-up (Appendix G.4, SPEC section 4): sigmoid classifiers in both stages, aLRP
Loss on every anchor of the RPN (positives by the 0.7 / 0.3 rule, Eloc with tau = 0.7) and
on every (RoI, class) pair of the top-1000 proposals (no ground truth added to them: the
authors' PseudoSampler), the RPN's loss weighted by 0.2, each stage with its own
self-balance. The baselines are mmdetection's: sigmoid CE + L1 with 256 sampled anchors in
the RPN, softmax CE + L1 (or GIoU x 10) with 512 sampled RoIs, ground truths added to the
proposals. The RPN keeps the top 2000 anchors per level before its NMS in training, 1000
at test time.

The pyramid has five levels from ``detector.min_level``: 2 gives mmdetection's P2..P6
(strides 4..64, the backbone's C2 included, the paper scale), 3 gives P3..P7 (strides
8..128, the cpu scale: on 128-px images P2 would quadruple the anchors). Levels past C5 are
max-pooled, without parameters, as mmdetection's FPN for Faster R-CNN makes P6. The RPN
works on all five levels and the RoI head pools from the first four (P2..P5 as
mmdetection, or P3..P6).

Training with SB: the model holds two ``SelfBalance`` weights, ``self_balance`` (RoI stage)
and ``rpn_self_balance``. The training loop must feed each its own stage's unscaled terms
(``loss_roi_cls`` / ``loss_roi_loc`` and ``loss_rpn_cls`` / ``loss_rpn_loc``) and call
``step_epoch`` on both; see ``update_self_balance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from alrp_lab.assigners import MaxIoUAssigner
from alrp_lab.losses import SelfBalance, build_box_error
from alrp_lab.models.fpn import FPN
from alrp_lab.models.parts import (
    BackboneConfig,
    DetectorConfig,
    build_backbone_fpn,
    build_detector_box_error,
    build_loc_weight,
)
from alrp_lab.models.postprocess import TestConfig
from alrp_lab.models.roi_head import BoxHead, RoIFeatureExtractor, RoIHead, RoILoss
from alrp_lab.models.rpn import ProposalConfig, RegionProposalNetwork, RPNHead, RPNLoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder

__all__ = [
    "FasterRCNN",
    "FasterRCNNConfig",
    "build_faster_rcnn",
    "check_targets",
    "FASTER_RCNN_LOSSES",
]

FASTER_RCNN_LOSSES = ("alrp", "ce")


def check_targets(targets: Sequence[Mapping[str, Tensor]], batch: int, num_classes: int) -> None:
    """Raise a ValueError naming the fix when training targets break the contract."""
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} needs 'boxes' (G, 4) and 'labels' (G,)")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"target {i}: boxes must be (G, 4) and labels (G,), got "
                f"{tuple(boxes.shape)} and {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"target {i}: labels must lie in 0..{num_classes - 1} (contiguous), got "
                f"{labels.min().item()}..{labels.max().item()}"
            )


class FasterRCNN(nn.Module):
    """Backbone -> FPN -> RPN -> RoI head.

    Args:
        backbone: returns [C3, C4, C5] (or [C2, ..., C5]) and has ``out_channels``.
        fpn: one level per RPN anchor stride.
        rpn: a ``RegionProposalNetwork``.
        roi_head: a ``RoIHead`` pooling from the first levels of the FPN.
        rpn_weight: multiplies the RPN's whole loss (0.2 for aLRP, 1 for the baselines).
    """

    def __init__(
        self,
        backbone: nn.Module,
        fpn: FPN,
        rpn: RegionProposalNetwork,
        roi_head: RoIHead,
        rpn_weight: float = 0.2,
    ) -> None:
        super().__init__()
        if fpn.num_outs != rpn.anchor_generator.num_levels:
            raise ValueError(
                f"the FPN gives {fpn.num_outs} levels but the RPN's anchor generator has "
                f"{rpn.anchor_generator.num_levels} strides; make them agree"
            )
        if len(roi_head.extractor.strides) > fpn.num_outs:
            raise ValueError(
                f"the RoI head pools from {len(roi_head.extractor.strides)} levels but the FPN "
                f"gives {fpn.num_outs}"
            )
        if not rpn_weight > 0:
            raise ValueError(f"rpn_weight must be positive, got {rpn_weight}")
        self.backbone = backbone
        self.fpn = fpn
        self.rpn = rpn
        self.roi_head = roi_head
        self.rpn_weight = float(rpn_weight)

    @property
    def num_classes(self) -> int:
        return self.roi_head.num_classes

    @property
    def self_balance(self) -> SelfBalance:
        """The RoI stage's localisation weight (SB or constant), for the training loop."""
        return self.roi_head.loss.balance

    @property
    def rpn_self_balance(self) -> SelfBalance:
        """The RPN's localisation weight (its own SB for aLRP; constant 1 for the baselines)."""
        return self.rpn.self_balance

    def loc_weights(self) -> list[SelfBalance]:
        """Every localisation weight the training loop re-estimates: the RoI stage's, then
        the RPN's (the checkpoint saves their open sums in this order)."""
        return [self.self_balance, self.rpn_self_balance]

    def update_self_balance(self, losses: Mapping[str, Any]) -> None:
        """Feed one iteration's per-stage terms to both weights (what the training loop does)."""
        self.self_balance.update(losses["loss_roi_cls"], losses["loss_roi_loc"])
        self.rpn_self_balance.update(losses["loss_rpn_cls"], losses["loss_rpn_loc"])

    def grad_balance(self) -> float | None:
        """sum |dL/ds| over negatives / positives of the RoI classifier's latest backward."""
        return self.roi_head.loss.grad_balance()

    def forward(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor | int] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in eval mode.

        Args:
            images: (B, 3, H, W) normalised, zero-padded batch.
            targets: training only; B dicts with ``boxes (G, 4)`` (pixels of ``images``) and
                ``labels (G,)`` long in ``0..C-1``; G may be 0.
            image_sizes: B (h, w) of the unpadded images; proposals and detections are
                clipped to them (default: the padded size).

        Returns:
            Training: ``loss`` (rpn_weight * RPN loss + RoI loss, each with its own weight on
            localisation), ``loss_cls`` / ``loss_loc`` (sums of both stages' unweighted
            terms), ``num_pos`` (positive RoIs), and per stage ``loss_rpn_cls``,
            ``loss_rpn_loc``, ``loss_roi_cls``, ``loss_roi_loc`` (unweighted, detached),
            ``num_rpn_pos``.
            Eval: B dicts ``boxes (K, 4)``, ``scores (K,)``, ``labels (K,)``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) batch, got {tuple(images.shape)}")
        batch = images.shape[0]
        if image_sizes is None:
            image_sizes = [tuple(images.shape[-2:])] * batch
        if len(image_sizes) != batch:
            raise ValueError(f"got {len(image_sizes)} image_sizes for a batch of {batch} images")
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        if self.training:
            if targets is None:
                raise ValueError(
                    "FasterRCNN in training mode needs targets; call model.eval() for detections"
                )
            check_targets(targets, batch, self.num_classes)
            return self._losses(images, targets, sizes)
        with torch.no_grad():
            features = self.fpn(self.backbone(images))
            proposals, _ = self.rpn(features, sizes)
            return self.roi_head(features, proposals, sizes)

    def _losses(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        sizes: list[tuple[int, int]],
    ) -> dict[str, Tensor | int]:
        device, dtype = images.device, images.dtype
        targets = [
            {
                "boxes": t["boxes"].to(device=device, dtype=dtype),
                "labels": t["labels"].to(device=device, dtype=torch.long),
            }
            for t in targets
        ]
        features = self.fpn(self.backbone(images))
        proposals, rpn = self.rpn(features, sizes, [t["boxes"] for t in targets])
        assert rpn is not None
        roi = self.roi_head(features, proposals, sizes, targets)
        return {
            "loss": self.rpn_weight * rpn["loss"] + roi["loss"],
            "loss_cls": rpn["loss_cls"] + roi["loss_cls"],
            "loss_loc": rpn["loss_loc"] + roi["loss_loc"],
            "num_pos": roi["num_pos"],
            "loss_rpn_cls": rpn["loss_cls"],
            "loss_rpn_loc": rpn["loss_loc"],
            "loss_roi_cls": roi["loss_cls"],
            "loss_roi_loc": roi["loss_loc"],
            "num_rpn_pos": rpn["num_pos"],
        }


@dataclass
class FasterRCNNConfig(DetectorConfig):
    """``conf/detector/faster_rcnn.yaml``: the common keys (``head_*`` are the RPN head's,
    ``pre_nms_topk`` the RPN's per-level top-k before its NMS at test time), the
    pyramid's first level, anchors, both stages."""

    # Finest pyramid level: 2 (P2..P6, mmdetection's) or 3 (P3..P7).
    min_level: int
    # The RPN's per-level top-k before NMS in training (mmdetection: 2000).
    train_pre_nms_topk: int

    # Anchors: side octave_base_scale * stride, scales_per_octave scales x 3 ratios.
    octave_base_scale: float
    scales_per_octave: int
    # RPN loss weight; None picks the paper's: 0.2 with aLRP Loss, 1.0 for the baselines.
    rpn_weight: float | None
    rpn_pos_iou: float
    rpn_neg_iou: float
    rpn_min_pos_iou: float
    # aLRP's tau for the RPN's Eloc.
    rpn_tau: float
    rpn_nms_iou: float
    num_proposals: int
    # The baselines' random samplers (aLRP Loss uses every anchor and every proposal).
    rpn_sample_size: int
    rpn_pos_fraction: float
    roi_fc_channels: int
    roi_sampling_ratio: int
    roi_canonical_scale: float
    roi_pos_iou: float
    roi_sample_size: int
    roi_pos_fraction: float
    # Ground truths among the proposals in training; None: the paper's (baselines only).
    add_gt_as_proposals: bool | None


# The architecture's constants (mmdetection's Faster R-CNN), not options of the paper's runs.
NUM_LEVELS = 5
MIN_LEVELS = (2, 3)
RATIOS = (0.5, 1.0, 2.0)
BOX_CODER_STDS = (0.1, 0.1, 0.2, 0.2)
# mmdetection's RPN codes deltas with unit stds for the baselines.
CE_RPN_BOX_CODER_STDS = (1.0, 1.0, 1.0, 1.0)
ROI_SIZE = 7
ROI_CANONICAL_LEVEL = 4


def build_faster_rcnn(
    num_classes: int,
    *,
    backbone: BackboneConfig,
    detector: FasterRCNNConfig,
    loss: Any,
    box_error: Any,
    assigner: Any,
    track_grad_balance: bool = False,
) -> FasterRCNN:
    """Faster R-CNN as Table 8 trains it, from its config sections, each taken whole.

    Read by their YAML keys like ``build_retinanet``'s. ``assigner`` is unused: both stages
    have their own max-IoU rules (``detector.rpn_*``, ``detector.roi_*``).
    ``loss.name="alrp"``: aLRP on both stages, no samplers; the RoI stage's Eloc is
    ``box_error`` (``giou``/``iou``) with its tau, the RPN's the same error with
    ``detector.rpn_tau``, and no ground truths among the proposals unless
    ``detector.add_gt_as_proposals`` forces them. SB (from ``loss.sb_init``) runs
    separately in each stage; with
    ``loss.self_balance`` false both stages use the constant ``loss.wr``.
    ``loss.name="ce"``: the baselines, RPN sigmoid CE + L1 (weight 1) on
    ``rpn_sample_size`` anchors, RoI softmax CE + ``box_error`` (weight ``wr``: 1 for L1, 10
    for GIoU in the paper) on ``roi_sample_size`` RoIs; SB, when on, weights the RoI term.
    Anchors: ``octave_base_scale * stride`` with one scale per location: mmdetection's 8 at
    stride 4 (P2, ``detector.min_level=2``) is 32 px, the cpu scale's 2 at stride 8 16 px.
    """
    if loss.name not in FASTER_RCNN_LOSSES:
        raise ValueError(
            f"Faster R-CNN trains with loss in {FASTER_RCNN_LOSSES} (the paper's Table 8), got "
            f"{loss.name!r}"
        )
    alrp = loss.name == "alrp"
    if alrp and box_error.name not in ("iou", "giou"):
        raise ValueError(
            f"aLRP Loss ranks by an IoU-based error; box_error={box_error.name!r} is for the "
            "baselines: use 'giou' or 'iou'"
        )
    if detector.min_level not in MIN_LEVELS:
        raise ValueError(
            f"detector.min_level must be one of {MIN_LEVELS} (P2..P6 or P3..P7), got "
            f"{detector.min_level}"
        )
    strides = tuple(2 ** (detector.min_level + i) for i in range(NUM_LEVELS))
    rpn_weight = detector.rpn_weight
    if rpn_weight is None:
        rpn_weight = 0.2 if alrp else 1.0
    # The ranking losses' smoothing; cross entropy has none.
    ranking = {"delta": loss.delta} if alrp else {}

    backbone_net, fpn = build_backbone_fpn(
        backbone,
        fpn_channels=detector.fpn_channels,
        num_outs=NUM_LEVELS,
        fpn_extra="pool",
        with_c2=detector.min_level == 2,
    )
    anchor_generator = AnchorGenerator(
        strides, detector.octave_base_scale, detector.scales_per_octave, RATIOS
    )
    if alrp:
        rpn_loss = RPNLoss(
            "alrp",
            build_detector_box_error(box_error, tau=detector.rpn_tau),
            build_loc_weight(loss),
            BoxCoder(stds=BOX_CODER_STDS),
            **ranking,
        )
    else:
        rpn_loss = RPNLoss(
            "ce",
            build_box_error("l1"),
            SelfBalance(init=1.0, enabled=False),
            BoxCoder(stds=CE_RPN_BOX_CODER_STDS),
            sampler=RandomSampler(detector.rpn_sample_size, detector.rpn_pos_fraction),
        )
    rpn = RegionProposalNetwork(
        RPNHead(
            detector.fpn_channels,
            anchor_generator.num_anchors_per_location,
            feat_channels=detector.head_channels,
            num_convs=detector.head_convs,
            prior_prob=0.01 if alrp else None,
        ),
        anchor_generator,
        MaxIoUAssigner(
            pos_iou=detector.rpn_pos_iou,
            neg_iou=detector.rpn_neg_iou,
            min_pos_iou=detector.rpn_min_pos_iou,
        ),
        rpn_loss,
        ProposalConfig(
            detector.pre_nms_topk,
            detector.rpn_nms_iou,
            detector.num_proposals,
            train_pre_nms_topk=detector.train_pre_nms_topk,
        ),
    )

    roi_loss = RoILoss(
        loss.name,
        build_detector_box_error(box_error),
        build_loc_weight(loss),
        BoxCoder(stds=BOX_CODER_STDS),
        **ranking,
        track_grad_balance=track_grad_balance,
    )
    # Every level but the RPN's coarsest: P2..P5 as mmdetection (or P3..P6).
    roi_strides = strides[:-1]
    roi_head = RoIHead(
        RoIFeatureExtractor(
            roi_strides,
            ROI_SIZE,
            detector.roi_sampling_ratio,
            detector.roi_canonical_scale,
            ROI_CANONICAL_LEVEL,
        ),
        BoxHead(
            detector.fpn_channels,
            ROI_SIZE,
            detector.roi_fc_channels,
            num_classes,
            background=not alrp,
        ),
        MaxIoUAssigner(
            pos_iou=detector.roi_pos_iou, neg_iou=detector.roi_pos_iou, low_quality_matches=False
        ),
        roi_loss,
        sampler=None
        if alrp
        else RandomSampler(detector.roi_sample_size, detector.roi_pos_fraction),
        test_cfg=TestConfig(
            score_thr=detector.score_thr, nms_iou=detector.nms_iou, max_per_img=detector.max_per_img
        ),
        # The baselines' RandomSampler adds the ground truths; aLRP's PseudoSampler does not.
        add_gt_as_proposals=(
            not alrp if detector.add_gt_as_proposals is None else bool(detector.add_gt_as_proposals)
        ),
    )
    return FasterRCNN(backbone_net, fpn, rpn, roi_head, rpn_weight)
