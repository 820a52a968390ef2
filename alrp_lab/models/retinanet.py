"""RetinaNet (Lin et al., 2017): backbone, FPN, a shared head over P3..P7, a dense loss.

``build_retinanet`` assembles the paper's variants from the config sections, each taken
whole and read by its YAML keys (``RetinaNetConfig`` is the ``detector`` node).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from alrp_lab.losses import SelfBalance
from alrp_lab.models.dense_loss import DenseDetectionLoss
from alrp_lab.models.fpn import FPN
from alrp_lab.models.parts import (
    BackboneConfig,
    DetectorConfig,
    build_assigner,
    build_backbone_fpn,
    build_detector_box_error,
    build_loc_weight,
    classifier_options,
)
from alrp_lab.models.postprocess import TestConfig, postprocess_image
from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder

__all__ = ["RetinaHead", "RetinaNet", "RetinaNetConfig", "build_retinanet"]


class RetinaHead(nn.Module):
    """Classification and regression towers shared across pyramid levels.

    Args:
        in_channels: channels of every pyramid level.
        num_anchors: anchors per location (A).
        num_classes: C (sigmoid classifiers, no background class).
        num_convs: 3x3 conv + ReLU layers in each tower (4 in RetinaNet).
        feat_channels: channels of the tower layers.
        prior_prob: initial foreground probability of every classifier output (0.01),
            so the background's loss does not swamp the first iterations.
        norm: None or ``"gn"`` (GroupNorm after every tower conv).

    ``forward([P_l (B, in, H_l, W_l)]) -> (cls [(B, H_l*W_l*A, C)], reg [(B, H_l*W_l*A, 4)])``,
    rows ordered (y, x, anchor) like ``AnchorGenerator``'s output.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        feat_channels: int = 256,
        prior_prob: float = 0.01,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if norm not in (None, "gn"):
            raise ValueError(f"unknown head norm {norm!r}; use None or 'gn'")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must lie in (0, 1), got {prior_prob}")
        if num_convs < 0 or feat_channels < 1:
            raise ValueError(
                f"num_convs must be >= 0 and feat_channels >= 1, got {num_convs}, {feat_channels}"
            )
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.cls_convs = self._tower(in_channels, feat_channels, num_convs, norm)
        self.reg_convs = self._tower(in_channels, feat_channels, num_convs, norm)
        last = feat_channels if num_convs > 0 else in_channels
        self.cls_logits = nn.Conv2d(last, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(last, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    @staticmethod
    def _tower(in_ch: int, ch: int, num_convs: int, norm: str | None) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers.append(nn.Conv2d(in_ch if i == 0 else ch, ch, 3, padding=1))
            if norm == "gn":
                layers.append(nn.GroupNorm(math.gcd(32, ch), ch))
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    @staticmethod
    def _flatten(x: Tensor, k: int) -> Tensor:
        """(B, A*K, H, W) -> (B, H*W*A, K)."""
        b, _, h, w = x.shape
        return x.view(b, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, k)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cls_out, reg_out = [], []
        for x in features:
            cls_out.append(self._flatten(self.cls_logits(self.cls_convs(x)), self.num_classes))
            reg_out.append(self._flatten(self.bbox_pred(self.reg_convs(x)), 4))
        return cls_out, reg_out


class RetinaNet(nn.Module):
    """A one-stage detector: backbone -> FPN -> RetinaHead, trained by a dense loss.

    Args:
        backbone: returns [C3, C4, C5] and has ``out_channels``.
        fpn: maps them to as many levels as ``anchor_generator`` has strides.
        num_classes: C.
        head: a ``RetinaHead``, or a mapping of its keyword arguments (``num_convs``,
            ``feat_channels``, ``prior_prob``, ``norm``); None uses the defaults.
        anchor_generator: anchors per level (its ``num_anchors_per_location`` sizes the head).
        assigner: ``assign(anchors (A, 4), gt_boxes (G, 4), num_anchors_per_level)``.
        loss: the ``DenseDetectionLoss`` (its box coder also decodes at test time).
        test_cfg: ``TestConfig`` or a mapping of its fields.
    """

    def __init__(
        self,
        backbone: nn.Module,
        fpn: FPN,
        num_classes: int,
        head: RetinaHead | Mapping[str, Any] | None,
        anchor_generator: AnchorGenerator,
        assigner: Any,
        loss: DenseDetectionLoss,
        test_cfg: TestConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if fpn.num_outs != anchor_generator.num_levels:
            raise ValueError(
                f"the FPN gives {fpn.num_outs} levels but the anchor generator has "
                f"{anchor_generator.num_levels} strides; make them agree"
            )
        self.backbone = backbone
        self.fpn = fpn
        self.num_classes = num_classes
        num_anchors = anchor_generator.num_anchors_per_location
        if not isinstance(head, RetinaHead):
            head = RetinaHead(fpn.out_channels, num_anchors, num_classes, **dict(head or {}))
        elif head.num_anchors != num_anchors or head.num_classes != num_classes:
            raise ValueError(
                f"head predicts {head.num_anchors} anchors x {head.num_classes} classes per "
                f"location, the model needs {num_anchors} x {num_classes}"
            )
        self.head = head
        self.anchor_generator = anchor_generator
        self.assigner = assigner
        self.loss = loss
        # The model's own: training encodes targets with it (through the loss), inference
        # decodes with it here.
        self.box_coder = loss.box_coder
        self.test_cfg = TestConfig.from_any(test_cfg)

    @property
    def self_balance(self) -> SelfBalance | None:
        """The loss's localisation weight (SB or constant wr), for the training loop."""
        return self.loss.balance

    def loc_weights(self) -> list[SelfBalance]:
        """Every localisation weight the training loop re-estimates (one for a dense head)."""
        return [self.loss.balance]

    def update_self_balance(self, losses: Mapping[str, Any]) -> None:
        """Feed one iteration's unscaled terms (``forward``'s output) to the weight."""
        self.loss.balance.update(losses["loss_cls"], losses["loss_loc"])

    def grad_balance(self) -> float | None:
        """sum |dL/ds| over negatives / over positives from the latest backward (Figure 4).

        None unless ``loss.track_grad_balance`` is on and that batch had positives.
        """
        return self.loss.grad_balance()

    def forward(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> dict[str, Tensor | int] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in eval mode.

        Args:
            images: (B, 3, H, W) normalised, zero-padded batch.
            targets: training only; B dicts with ``boxes (G, 4)`` (x1, y1, x2, y2 pixels of
                ``images``) and ``labels (G,)`` long in ``0..C-1``; G may be 0.
            image_sizes: B (h, w) of the unpadded images; detections are clipped to them
                (default: the padded size).

        Returns:
            Training: ``loss``, ``loss_cls``, ``loss_loc`` (unscaled), ``num_pos`` and, for
            aLRP, ``eloc_mean`` and ``eloc_over_one`` (``DenseDetectionLoss``).
            Eval: B dicts ``boxes (K, 4)`` in the input image's pixels, ``scores (K,)``,
            ``labels (K,)``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) batch, got {tuple(images.shape)}")
        if self.training:
            if targets is None:
                raise ValueError(
                    "RetinaNet in training mode needs targets; call model.eval() for detections"
                )
            return self._losses(*self._dense_outputs(images), targets)
        # Detections never need a graph; skipping it saves the activations' memory.
        with torch.no_grad():
            return self._detect(*self._dense_outputs(images), images, image_sizes)

    def _dense_outputs(self, images: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: logits (B, A_l, C), deltas (B, A_l, 4), anchors (A_l, 4)."""
        features = self.fpn(self.backbone(images))
        cls_levels, reg_levels = self.head(features)
        anchor_levels = self.anchor_generator(
            [tuple(f.shape[-2:]) for f in features], device=images.device, dtype=images.dtype
        )
        return cls_levels, reg_levels, anchor_levels

    def _check_targets(self, targets: Sequence[Mapping[str, Tensor]], batch: int) -> None:
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
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(
                    f"target {i}: labels must lie in 0..{self.num_classes - 1} (contiguous), "
                    f"got {labels.min().item()}..{labels.max().item()}"
                )

    def _losses(
        self,
        cls_levels: list[Tensor],
        reg_levels: list[Tensor],
        anchor_levels: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
    ) -> dict[str, Tensor | int]:
        batch = cls_levels[0].shape[0]
        self._check_targets(targets, batch)
        anchors = torch.cat(anchor_levels)
        num_per_level = [a.shape[0] for a in anchor_levels]
        device, dtype = anchors.device, anchors.dtype
        gt_boxes = [t["boxes"].to(device=device, dtype=dtype) for t in targets]
        gt_labels = [t["labels"].to(device=device, dtype=torch.long) for t in targets]
        with torch.no_grad():
            assignments = [self.assigner.assign(anchors, b, num_per_level) for b in gt_boxes]
        return self.loss(
            torch.cat(cls_levels, dim=1),
            torch.cat(reg_levels, dim=1),
            anchors,
            assignments,
            gt_boxes,
            gt_labels,
        )

    def _detect(
        self,
        cls_levels: list[Tensor],
        reg_levels: list[Tensor],
        anchor_levels: list[Tensor],
        images: Tensor,
        image_sizes: Sequence[tuple[int, int]] | None,
    ) -> list[dict[str, Tensor]]:
        batch = images.shape[0]
        if image_sizes is None:
            image_sizes = [tuple(images.shape[-2:])] * batch
        if len(image_sizes) != batch:
            raise ValueError(f"got {len(image_sizes)} image_sizes for a batch of {batch} images")
        return [
            postprocess_image(
                [c[i] for c in cls_levels],
                [r[i] for r in reg_levels],
                anchor_levels,
                (int(image_sizes[i][0]), int(image_sizes[i][1])),
                self.box_coder,
                self.test_cfg,
            )
            for i in range(batch)
        ]


@dataclass
class RetinaNetConfig(DetectorConfig):
    """``conf/detector/retinanet.yaml``: the common keys and the anchors."""

    # Anchors: octave_base_scale * stride * 2^(k / scales_per_octave), k < scales_per_octave.
    octave_base_scale: float
    scales_per_octave: int


# The architecture's constants (mmdetection's RetinaNet), not options of the paper's runs.
STRIDES = (8, 16, 32, 64, 128)
BOX_CODER_STDS = (0.1, 0.1, 0.2, 0.2)
PRIOR_PROB = 0.01


def anchor_ratios(assigner: str) -> tuple[float, ...]:
    """One ratio with ATSS (aLRPLoss500: 2 anchors per location at ``scales_per_octave=2``),
    the usual three with max-IoU (SPEC section 4)."""
    return (1.0,) if assigner == "atss" else (0.5, 1.0, 2.0)


class DenseParts(NamedTuple):
    """What RetinaNet and FoveaBox build alike from their config sections."""

    head: RetinaHead
    loss: DenseDetectionLoss
    test_cfg: TestConfig


def build_dense_parts(
    num_classes: int,
    num_anchors: int,
    box_coder: Any,
    *,
    detector: Any,
    loss: Any,
    box_error: Any,
    track_grad_balance: bool,
    score_normalizer: str = "positives",
) -> DenseParts:
    """The dense loss (with ``box_coder``, ``score_normalizer`` as ``DenseDetectionLoss``
    takes it), the shared head for ``num_anchors`` priors per location and the
    post-processing settings, read from the config sections."""
    dense_loss = DenseDetectionLoss(
        loss.name,
        build_detector_box_error(box_error),
        build_loc_weight(loss),
        box_coder,
        **classifier_options(loss),
        track_grad_balance=track_grad_balance,
        score_normalizer=score_normalizer,
    )
    head = RetinaHead(
        detector.fpn_channels,
        num_anchors,
        num_classes,
        num_convs=detector.head_convs,
        feat_channels=detector.head_channels,
        prior_prob=PRIOR_PROB,
    )
    test_cfg = TestConfig(
        detector.score_thr, detector.nms_iou, detector.pre_nms_topk, detector.max_per_img
    )
    return DenseParts(head, dense_loss, test_cfg)


def build_retinanet(
    num_classes: int,
    *,
    backbone: BackboneConfig,
    detector: RetinaNetConfig,
    loss: Any,
    box_error: Any,
    assigner: Any,
    track_grad_balance: bool = False,
) -> RetinaNet:
    """RetinaNet as the paper trains it, from its config sections, each taken whole.

    ``backbone``, ``detector``, ``loss``, ``box_error`` and ``assigner`` are the sections of
    ``conf/``, read by their YAML keys (``models.parts``); ``tests/models/test_builders.py``
    checks that every key reaches the model. ``backbone.weights`` is a local
    torchvision-format file or None (``engine.builders`` resolves ``builtin`` first).
    Localisation weight: SB from ``loss.sb_init``, or the constant ``loss.wr`` with
    ``loss.self_balance`` false (Table 3).
    """
    backbone_net, fpn = build_backbone_fpn(
        backbone, fpn_channels=detector.fpn_channels, num_outs=len(STRIDES), fpn_extra="c5"
    )
    anchor_generator = AnchorGenerator(
        STRIDES,
        detector.octave_base_scale,
        detector.scales_per_octave,
        anchor_ratios(assigner.name),
    )
    parts = build_dense_parts(
        num_classes,
        anchor_generator.num_anchors_per_location,
        BoxCoder(stds=BOX_CODER_STDS),
        detector=detector,
        loss=loss,
        box_error=box_error,
        track_grad_balance=track_grad_balance,
    )
    return RetinaNet(
        backbone_net,
        fpn,
        num_classes,
        parts.head,
        anchor_generator,
        build_assigner(assigner),
        parts.loss,
        parts.test_cfg,
    )
