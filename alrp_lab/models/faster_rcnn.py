"""Faster R-CNN (Ren et al., 2015) with FPN, trained by aLRP Loss on both stages (Table 8).

The paper's set-up (Appendix G.4, SPEC section 4): sigmoid classifiers in both stages, aLRP
Loss on every anchor of the RPN (positives by the 0.7 / 0.3 rule, Eloc with tau = 0.7) and
on every (RoI, class) pair of the top-1000 proposals, the RPN's loss weighted by 0.2, each
stage with its own self-balance. The baselines are mmdetection's: sigmoid CE + L1 with 256
sampled anchors in the RPN, softmax CE + L1 (or GIoU x 10) with 512 sampled RoIs.

The project's backbone gives C3..C5, so the FPN gives P3..P7 (strides 8..128): the RPN
works on all five levels and the RoI head pools from P3..P6, one octave coarser than
mmdetection's P2..P6 / P2..P5. ``build_faster_rcnn`` shifts the anchor scale to keep the
smallest anchor at 32 px.

Training with SB: the model holds two ``SelfBalance`` weights, ``self_balance`` (RoI stage)
and ``rpn_self_balance``. The training loop must feed each its own stage's unscaled terms
(``loss_roi_cls`` / ``loss_roi_loc`` and ``loss_rpn_cls`` / ``loss_rpn_loc``) and call
``step_epoch`` on both; see ``update_self_balance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alrp_lab.assigners import MaxIoUAssigner
from alrp_lab.losses import SelfBalance, build_box_error
from alrp_lab.models.fpn import FPN
from alrp_lab.models.parts import (
    build_backbone_fpn,
    build_detector_box_error,
    build_loc_weight,
    shared_arguments,
)
from alrp_lab.models.postprocess import TestConfig
from alrp_lab.models.roi_head import BoxHead, RoIFeatureExtractor, RoIHead, RoILoss
from alrp_lab.models.rpn import ProposalConfig, RegionProposalNetwork, RPNHead, RPNLoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder

__all__ = [
    "FasterRCNN",
    "assemble_faster_rcnn",
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
        backbone: returns [C3, C4, C5] and has ``out_channels``.
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


def assemble_faster_rcnn(
    num_classes: int,
    *,
    depth: int = 50,
    groups: int = 1,
    width_per_group: int = 64,
    base_width: int = 64,
    norm: str = "bn",
    frozen_stages: int = -1,
    backbone_weights: str | Path | None = None,
    fpn_channels: int = 256,
    fpn_extra: str = "p5",
    head_convs: int = 1,
    head_channels: int = 256,
    cls_loss: str = "alrp",
    box_error: str = "giou",
    tau: float = 0.5,
    smooth_l1_beta: float = 1.0,
    coord_reduction: str = "sum",
    delta: float = 1.0,
    sb_init: float = 50.0,
    self_balance: bool = True,
    wr: float | None = None,
    strides: Sequence[int] = (8, 16, 32, 64, 128),
    octave_base_scale: float = 4,
    scales_per_octave: int = 1,
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    box_coder_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
    rpn_box_coder_stds: Sequence[float] | None = None,
    rpn_weight: float | None = None,
    rpn_pos_iou: float = 0.7,
    rpn_neg_iou: float = 0.3,
    rpn_min_pos_iou: float = 0.3,
    rpn_tau: float = 0.7,
    rpn_nms_iou: float = 0.7,
    pre_nms_topk: int = 1000,
    num_proposals: int = 1000,
    rpn_sample_size: int = 256,
    rpn_pos_fraction: float = 0.5,
    roi_fc_channels: int = 1024,
    roi_size: int = 7,
    roi_sampling_ratio: int = 0,
    roi_canonical_scale: float = 224.0,
    roi_canonical_level: int = 4,
    roi_pos_iou: float = 0.5,
    roi_sample_size: int = 512,
    roi_pos_fraction: float = 0.25,
    add_gt_as_proposals: bool = True,
    score_thr: float = 0.05,
    nms_iou: float = 0.5,
    max_per_img: int = 100,
    track_grad_balance: bool = False,
) -> FasterRCNN:
    """Faster R-CNN as Table 8 trains it, from plain arguments named like the ``conf/`` keys.

    ``cls_loss="alrp"``: aLRP on both stages, no samplers; the RoI stage's Eloc is
    ``box_error`` (``giou``/``iou``) with ``tau``, the RPN's the same error with ``rpn_tau``.
    SB (``self_balance=True``, from ``sb_init``) runs separately in each stage; with
    ``self_balance=False`` both stages use the constant ``wr`` (1.0 when None).
    ``cls_loss="ce"``: the baselines, RPN sigmoid CE + L1 (weight 1) on ``rpn_sample_size``
    anchors, RoI softmax CE + ``box_error`` (weight ``wr``: 1 for L1, 10 for GIoU in the
    paper) on ``roi_sample_size`` RoIs; ``self_balance=True`` puts SB on the RoI term.

    Defaults that depend on the loss: ``rpn_weight`` None is 0.2 for aLRP and 1.0 for CE;
    ``rpn_box_coder_stds`` None is ``box_coder_stds`` for aLRP and (1, 1, 1, 1) for CE
    (mmdetection's RPN). ``pre_nms_topk`` is the RPN's per-level top-k before its NMS.
    Anchors: ``octave_base_scale * stride`` with one scale per location, so the default 4
    at stride 8 is mmdetection's 8 at stride 4 (32 px).
    """
    if cls_loss not in FASTER_RCNN_LOSSES:
        raise ValueError(
            f"Faster R-CNN supports cls_loss in {FASTER_RCNN_LOSSES} (the paper's Table 8), got "
            f"{cls_loss!r}"
        )
    alrp = cls_loss == "alrp"
    if alrp and box_error not in ("iou", "giou"):
        raise ValueError(
            f"aLRP Loss ranks by an IoU-based error; box_error={box_error!r} is for the "
            "baselines: use 'giou' or 'iou'"
        )
    if rpn_weight is None:
        rpn_weight = 0.2 if alrp else 1.0
    if rpn_box_coder_stds is None:
        rpn_box_coder_stds = box_coder_stds if alrp else (1.0, 1.0, 1.0, 1.0)

    backbone, fpn = build_backbone_fpn(
        depth=depth,
        groups=groups,
        width_per_group=width_per_group,
        base_width=base_width,
        norm=norm,
        frozen_stages=frozen_stages,
        backbone_weights=backbone_weights,
        fpn_channels=fpn_channels,
        num_outs=len(strides),
        fpn_extra=fpn_extra,
    )

    def balance() -> SelfBalance:
        return build_loc_weight(self_balance=self_balance, sb_init=sb_init, wr=wr)

    anchor_generator = AnchorGenerator(strides, octave_base_scale, scales_per_octave, ratios)
    if alrp:
        rpn_loss = RPNLoss(
            "alrp",
            build_detector_box_error(
                box_error,
                tau=rpn_tau,
                smooth_l1_beta=smooth_l1_beta,
                coord_reduction=coord_reduction,
            ),
            balance(),
            BoxCoder(stds=rpn_box_coder_stds),
            delta=delta,
        )
    else:
        rpn_loss = RPNLoss(
            "ce",
            build_box_error("l1"),
            SelfBalance(init=1.0, enabled=False),
            BoxCoder(stds=rpn_box_coder_stds),
            sampler=RandomSampler(rpn_sample_size, rpn_pos_fraction),
        )
    rpn = RegionProposalNetwork(
        RPNHead(
            fpn_channels,
            anchor_generator.num_anchors_per_location,
            feat_channels=head_channels,
            num_convs=head_convs,
            prior_prob=0.01 if alrp else None,
        ),
        anchor_generator,
        MaxIoUAssigner(pos_iou=rpn_pos_iou, neg_iou=rpn_neg_iou, min_pos_iou=rpn_min_pos_iou),
        rpn_loss,
        ProposalConfig(pre_nms_topk, rpn_nms_iou, num_proposals),
    )

    roi_loss = RoILoss(
        cls_loss,
        build_detector_box_error(
            box_error, tau=tau, smooth_l1_beta=smooth_l1_beta, coord_reduction=coord_reduction
        ),
        balance(),
        BoxCoder(stds=box_coder_stds),
        delta=delta,
        track_grad_balance=track_grad_balance,
    )
    # P3..P6: every level but the RPN's coarsest, as mmdetection pools from P2..P5.
    roi_strides = tuple(strides[:-1]) if len(strides) > 1 else tuple(strides)
    roi_head = RoIHead(
        RoIFeatureExtractor(
            roi_strides, roi_size, roi_sampling_ratio, roi_canonical_scale, roi_canonical_level
        ),
        BoxHead(fpn_channels, roi_size, roi_fc_channels, num_classes, background=not alrp),
        MaxIoUAssigner(pos_iou=roi_pos_iou, neg_iou=roi_pos_iou, low_quality_matches=False),
        roi_loss,
        sampler=None if alrp else RandomSampler(roi_sample_size, roi_pos_fraction),
        test_cfg=TestConfig(score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img),
        add_gt_as_proposals=add_gt_as_proposals,
    )
    return FasterRCNN(backbone, fpn, rpn, roi_head, rpn_weight)


def build_faster_rcnn(
    num_classes: int,
    *,
    backbone: Any,
    detector: Any,
    loss: Any,
    box_error: Any,
    assigner: Any,
    track_grad_balance: bool = False,
) -> FasterRCNN:
    """Faster R-CNN (Table 8) from its config sections, each taken whole.

    ``backbone``, ``detector``, ``loss``, ``box_error`` and ``assigner`` are the sections of
    ``conf/`` (the validated DictConfig nodes, or any objects with those attributes), read
    by their YAML key names, with no second default here: ``tests/models/test_builders.py``
    checks that every key of the sections reaches the model.
    ``assigner`` is unused: both stages have their own max-IoU rules (``detector.rpn_*``,
    ``detector.roi_*``). ``backbone.weights`` is a
    local file or None (``engine.builders`` resolves ``builtin`` first).
    """
    return assemble_faster_rcnn(
        num_classes,
        **shared_arguments(backbone, detector, loss, box_error, track_grad_balance),
        octave_base_scale=detector.octave_base_scale,
        scales_per_octave=detector.scales_per_octave,
        pre_nms_topk=detector.pre_nms_topk,
        rpn_weight=detector.rpn_weight,
        rpn_pos_iou=detector.rpn_pos_iou,
        rpn_neg_iou=detector.rpn_neg_iou,
        rpn_min_pos_iou=detector.rpn_min_pos_iou,
        rpn_tau=detector.rpn_tau,
        rpn_nms_iou=detector.rpn_nms_iou,
        num_proposals=detector.num_proposals,
        rpn_sample_size=detector.rpn_sample_size,
        rpn_pos_fraction=detector.rpn_pos_fraction,
        roi_fc_channels=detector.roi_fc_channels,
        roi_sampling_ratio=detector.roi_sampling_ratio,
        roi_canonical_scale=detector.roi_canonical_scale,
        roi_pos_iou=detector.roi_pos_iou,
        roi_sample_size=detector.roi_sample_size,
        roi_pos_fraction=detector.roi_pos_fraction,
    )
