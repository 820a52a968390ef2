"""Fast R-CNN stage of Faster R-CNN: RoI features, two FC layers, class-wise scores and boxes.

aLRP Loss (the paper's Appendix G.4) replaces the softmax by C sigmoid classifiers and ranks
every (RoI, class) pair of the batch: a pair is positive when the RoI overlaps a ground truth
of that class with IoU >= 0.5 and negative otherwise; Eloc is the (G)IoU error of the box
decoded for that class (tau = 0.5), and all proposals are used (no sampling). The baseline is
mmdetection's: softmax cross entropy over C + 1 classes on 512 sampled RoIs (25% positives),
plus L1 (or GIoU) on the positives, both divided by the number of sampled RoIs.

Box regression is class-specific (C x 4 deltas, ``reg_class_agnostic=False`` in the authors'
config), coded against the proposal with stds (0.1, 0.1, 0.2, 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alrp_lab.assigners.result import IGNORED
from alrp_lab.losses import BoxError, SelfBalance, alrp_loss
from alrp_lab.losses.ranking import check_delta
from alrp_lab.models.postprocess import TestConfig
from alrp_lab.models.precision import float32_loss
from alrp_lab.models.rpn import localisation_errors
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import clip_boxes_to_image
from alrp_lab.ops.nms import batched_nms
from alrp_lab.ops.roi_align import roi_align

__all__ = ["ROI_LOSSES", "RoIFeatureExtractor", "BoxHead", "RoILoss", "RoIHead"]

ROI_LOSSES = ("alrp", "ce")


class RoIFeatureExtractor(nn.Module):
    """RoIAlign from the pyramid level that suits each RoI's scale (FPN paper, Eq. 1).

    A RoI of side ``s = sqrt(w h)`` goes to level ``k = floor(k0 + log2(s / canonical))``
    clamped to the available levels, where level ``k`` has stride ``2^k``. With P2 the
    finest (strides 4..32) this is mmdetection's ``floor(log2(s / 56))`` (its finest_scale
    56); with P3 the finest, every RoI under ``canonical / 2`` pixels pools from P3.

    Args:
        strides: strides of the levels used, successive powers of two (P3..P6: 8..64).
        output_size: RoIAlign bins per side (7).
        sampling_ratio: RoIAlign samples per bin per axis; 0 adaptive (mmdetection's).
        canonical_scale: RoI side that maps to ``canonical_level`` (224).
        canonical_level: k0 (4).

    ``forward(features [(B, C, H_l, W_l)] (at least len(strides) levels, finest first),
    rois (K, 5) = (image index, x1, y1, x2, y2)) -> (K, C, out, out)``.
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64),
        output_size: int = 7,
        sampling_ratio: int = 0,
        canonical_scale: float = 224.0,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        strides = tuple(int(s) for s in strides)
        levels = [math.log2(s) for s in strides] if strides and min(strides) > 0 else []
        if not levels or any(
            not lv.is_integer() or lv != levels[0] + i for i, lv in enumerate(levels)
        ):
            raise ValueError(
                f"RoI strides must be successive powers of two (e.g. 8, 16, 32, 64), got {strides}"
            )
        if output_size < 1 or canonical_scale <= 0:
            raise ValueError(
                f"output_size must be >= 1 and canonical_scale > 0, got {output_size} and "
                f"{canonical_scale}"
            )
        self.strides = strides
        self.min_level = int(levels[0])
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_scale = float(canonical_scale)
        self.canonical_level = int(canonical_level)

    def map_levels(self, boxes: Tensor) -> Tensor:
        """(K, 4) boxes -> (K,) long index into ``strides``."""
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
        scale = torch.sqrt(wh[:, 0] * wh[:, 1])
        # The 1e-6 keeps an exact power of two on its own level despite log2's rounding.
        k = torch.floor(self.canonical_level + torch.log2(scale / self.canonical_scale + 1e-6))
        return (k.long() - self.min_level).clamp(min=0, max=len(self.strides) - 1)

    def forward(self, features: Sequence[Tensor], rois: Tensor) -> Tensor:
        if len(features) < len(self.strides):
            raise ValueError(
                f"the RoI extractor pools from {len(self.strides)} levels but got {len(features)}"
            )
        channels = features[0].shape[1]
        out = features[0].new_zeros(rois.shape[0], channels, self.output_size, self.output_size)
        if rois.shape[0] == 0:
            return out
        levels = self.map_levels(rois[:, 1:])
        indices, pooled = [], []
        for level, stride in enumerate(self.strides):
            idx = (levels == level).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            indices.append(idx)
            pooled.append(
                roi_align(
                    features[level],
                    rois[idx],
                    self.output_size,
                    1.0 / stride,
                    self.sampling_ratio,
                    aligned=True,
                )
            )
        return out.index_copy(0, torch.cat(indices), torch.cat(pooled))

    def extra_repr(self) -> str:
        return (
            f"strides={self.strides}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, canonical={self.canonical_scale}"
            f"@P{self.canonical_level}"
        )


class BoxHead(nn.Module):
    """Two shared FC layers, then class scores and class-specific box deltas.

    Args:
        in_channels: channels of the pooled features.
        roi_size: pooled side (7).
        fc_channels: width of both FC layers (1024 in the paper; small on a CPU).
        num_classes: C.
        background: add a background logit (softmax baseline: C + 1 outputs); False gives
            C sigmoid classifiers (aLRP).

    ``forward(x (R, in, roi, roi)) -> (logits (R, C [+ 1]), deltas (R, C, 4))``.
    """

    def __init__(
        self,
        in_channels: int,
        roi_size: int,
        fc_channels: int,
        num_classes: int,
        background: bool,
    ) -> None:
        super().__init__()
        if fc_channels < 1 or num_classes < 1:
            raise ValueError(
                f"fc_channels and num_classes must be >= 1, got {fc_channels} and {num_classes}"
            )
        self.num_classes = num_classes
        self.background = background
        self.fc1 = nn.Linear(in_channels * roi_size * roi_size, fc_channels)
        self.fc2 = nn.Linear(fc_channels, fc_channels)
        self.cls_score = nn.Linear(fc_channels, num_classes + int(background))
        self.bbox_pred = nn.Linear(fc_channels, num_classes * 4)
        # mmdetection's initialisation of Shared2FCBBoxHead.
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.cls_score(x), self.bbox_pred(x).view(-1, self.num_classes, 4)


class RoILoss(nn.Module):
    """Loss of the RoI head: aLRP over (RoI, class) pairs, or softmax CE + a box error.

    Args:
        cls_loss: ``"alrp"`` (C sigmoid logits per RoI) or ``"ce"`` (C + 1 softmax logits,
            the last one background).
        box_error: Eloc for aLRP (``GIoUError``/``IoUError``); any ``BoxError`` for CE.
        balance: the localisation weight: SB for aLRP, a constant (1 for L1, 10 for GIoU in
            the paper's baselines) for CE. The training loop updates it.
        box_coder: decodes (IoU errors) or encodes (delta errors) against the RoIs.
        delta: smoothing of aLRP's step function.
        track_grad_balance: record sum |dL/ds| over negative and positive (RoI, class)
            pairs at every backward (Figure 4); for CE over the C foreground logits.
    """

    def __init__(
        self,
        cls_loss: str,
        box_error: BoxError,
        balance: SelfBalance,
        box_coder: BoxCoder,
        *,
        delta: float = 1.0,
        track_grad_balance: bool = False,
    ) -> None:
        super().__init__()
        if cls_loss not in ROI_LOSSES:
            raise ValueError(f"unknown RoI loss {cls_loss!r}; choose one of {ROI_LOSSES}")
        if not isinstance(box_error, BoxError):
            raise ValueError("box_error must be a BoxError (alrp_lab.losses.build_box_error)")
        self.cls_loss = cls_loss
        self.box_error = box_error
        self.balance = balance
        self.box_coder = box_coder
        self.delta = check_delta(delta)
        self.track_grad_balance = track_grad_balance
        self._grad_sums: tuple[Tensor, Tensor] | None = None

    def grad_balance(self) -> float | None:
        """sum |dL/ds| over negatives / over positives of the latest backward, or None."""
        if self._grad_sums is None:
            return None
        neg, pos = (float(v) for v in self._grad_sums)
        return neg / pos if pos > 0 else None

    def _install_probe(self, logits: Tensor, labels: Tensor) -> None:
        """Hook on logits (R, K) reading the gradient of the first C columns; labels (R, C)."""
        num_classes = labels.shape[1]

        def hook(grad: Tensor) -> None:
            magnitude = grad.detach()[:, :num_classes].abs()
            self._grad_sums = (magnitude[labels == 0].sum(), magnitude[labels == 1].sum())

        logits.register_hook(hook)

    @float32_loss
    def forward(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        rois: Tensor,
        labels: Tensor,
        gt_boxes: Tensor,
    ) -> dict[str, Tensor | int]:
        """Loss of the RoIs of a batch.

        Args:
            cls_logits: (R, C) for aLRP, (R, C + 1) for CE.
            box_deltas: (R, C, 4) class-specific deltas.
            rois: (R, 4) the boxes the deltas refine.
            labels: (R,) long, the matched ground truth's class, -1 for background.
            gt_boxes: (R, 4) the matched ground truth (any value for background).

        Returns:
            ``loss`` (cls + weight * loc), ``loss_cls``, ``loss_loc`` (detached, unweighted),
            ``num_pos`` (int).
        """
        num_rois, num_classes = box_deltas.shape[:2]
        expected = num_classes + int(self.cls_loss == "ce")
        if cls_logits.shape != (num_rois, expected):
            raise ValueError(
                f"cls_logits must be (R, {expected}) for the {self.cls_loss} loss, got "
                f"{tuple(cls_logits.shape)}"
            )
        pos = (labels >= 0).nonzero().squeeze(1)
        pos_labels = labels[pos]
        pair_labels = torch.zeros(num_rois, num_classes, dtype=torch.long, device=labels.device)
        pair_labels[pos, pos_labels] = 1

        self._grad_sums = None
        if self.track_grad_balance and cls_logits.requires_grad and pos.numel() > 0:
            self._install_probe(cls_logits, pair_labels)
        zero = cls_logits.sum() * 0.0 + box_deltas.sum() * 0.0
        if pos.numel() > 0:
            errors = localisation_errors(
                self.box_error,
                self.box_coder,
                box_deltas[pos, pos_labels],
                rois[pos],
                gt_boxes[pos],
            )
        if self.cls_loss == "alrp":
            if pos.numel() == 0:
                cls = loc = zero  # SPEC: no positives, no ranking loss and no gradient
            else:
                # Row-major flattening puts the positives in RoI order, as loc_errors are.
                cls, loc = alrp_loss(
                    cls_logits.reshape(-1), pair_labels.reshape(-1), errors, delta=self.delta
                )
        else:
            target = torch.where(labels >= 0, labels, torch.full_like(labels, num_classes))
            denom = max(num_rois, 1)
            cls = F.cross_entropy(cls_logits, target, reduction="sum") / denom + zero
            loc = errors.sum() / denom + zero if pos.numel() > 0 else zero
        return {
            "loss": cls + self.balance(loc),
            "loss_cls": cls.detach(),
            "loss_loc": loc.detach(),
            "num_pos": int(pos.numel()),
        }

    def extra_repr(self) -> str:
        return f"cls_loss={self.cls_loss!r}, delta={self.delta}"


class RoIHead(nn.Module):
    """Training targets, features, scores and detections of the second stage.

    Args:
        extractor: a ``RoIFeatureExtractor``.
        box_head: a ``BoxHead`` (``background=True`` exactly when the loss is CE).
        assigner: ``assign(rois (R, 4), gt_boxes (G, 4))``; the paper's is
            ``MaxIoUAssigner(0.5, 0.5, low_quality_matches=False)``. RoIs it ignores (-2)
            are left out of training.
        loss: a ``RoILoss``.
        sampler: ``RandomSampler(512, 0.25)`` for the baseline; None trains on every RoI.
        test_cfg: ``TestConfig`` (score_thr, nms_iou, max_per_img; pre_nms_topk unused).
        add_gt_as_proposals: prepend each image's ground truths to its proposals in
            training, so the head always sees positives.
    """

    def __init__(
        self,
        extractor: RoIFeatureExtractor,
        box_head: BoxHead,
        assigner: object,
        loss: RoILoss,
        sampler: RandomSampler | None = None,
        test_cfg: TestConfig | Mapping | None = None,
        add_gt_as_proposals: bool = True,
    ) -> None:
        super().__init__()
        if box_head.background != (loss.cls_loss == "ce"):
            raise ValueError(
                "the box head needs a background logit exactly for the softmax (ce) loss: "
                f"background={box_head.background}, loss={loss.cls_loss!r}"
            )
        self.extractor = extractor
        self.box_head = box_head
        self.assigner = assigner
        self.loss = loss
        self.box_coder = loss.box_coder  # shared with the loss, which encodes the targets
        # Cross entropy trains a softmax over C + 1 (background last); the ranking losses
        # train one sigmoid per class.
        self.score_activation = "softmax" if loss.cls_loss == "ce" else "sigmoid"
        self.sampler = sampler
        self.test_cfg = TestConfig.from_any(test_cfg)
        self.add_gt_as_proposals = add_gt_as_proposals

    @property
    def num_classes(self) -> int:
        return self.box_head.num_classes

    @staticmethod
    def _as_rois(boxes: Sequence[Tensor]) -> Tensor:
        """B tensors (K_b, 4) -> (sum K_b, 5) with the image index first."""
        return torch.cat(
            [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
        )

    @torch.no_grad()
    def select_training_rois(
        self,
        proposals: Sequence[Tensor],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """RoIs to train on and their targets.

        Args:
            proposals: B tensors (K_b, 4); gt_boxes: B (G_b, 4); gt_labels: B (G_b,) long.

        Returns:
            rois: B tensors (R_b, 4); labels (sum R_b,) long class or -1 (background);
            matched (sum R_b, 4) the matched ground truth of each positive (zeros elsewhere).
        """
        rois, labels, matched = [], [], []
        for props, boxes, classes in zip(proposals, gt_boxes, gt_labels, strict=True):
            boxes = boxes.to(props.dtype)
            if self.add_gt_as_proposals:
                props = torch.cat((boxes, props))
            assign = self.assigner.assign(props, boxes)
            if self.sampler is not None:
                assign = self.sampler.subsample(assign)
            keep = assign.matched_gt != IGNORED
            gt_index = assign.matched_gt[keep]
            is_pos = gt_index >= 0
            rois.append(props[keep])
            if boxes.shape[0] == 0:
                labels.append(torch.full_like(gt_index, -1))
                matched.append(props.new_zeros(gt_index.shape[0], 4))
                continue
            safe = gt_index.clamp(min=0)
            labels.append(torch.where(is_pos, classes[safe], torch.full_like(gt_index, -1)))
            matched.append(torch.where(is_pos[:, None], boxes[safe], torch.zeros_like(boxes[safe])))
        return rois, torch.cat(labels), torch.cat(matched)

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, Tensor]] | None = None,
    ) -> dict[str, Tensor | int] | list[dict[str, Tensor]]:
        """Loss (with ``targets``) or detections.

        Args:
            features: pyramid levels (B, C, H_l, W_l), finest first.
            proposals: B tensors (K_b, 4), detached.
            image_sizes: B (h, w) to clip detections to.
            targets: training only; B dicts with ``boxes (G, 4)`` and ``labels (G,)``.

        Returns:
            Training: ``RoILoss``'s dict. Eval: B dicts ``boxes (K, 4)``, ``scores (K,)``
            sorted descending, ``labels (K,)`` long, K <= ``max_per_img``.
        """
        if targets is not None:
            gt_boxes = [t["boxes"] for t in targets]
            gt_labels = [t["labels"].long() for t in targets]
            rois, labels, matched = self.select_training_rois(proposals, gt_boxes, gt_labels)
            logits, deltas = self.box_head(self.extractor(features, self._as_rois(rois)))
            return self.loss(logits, deltas, torch.cat(rois), labels, matched)
        logits, deltas = self.box_head(self.extractor(features, self._as_rois(proposals)))
        sizes = [p.shape[0] for p in proposals]
        return [
            self._detect_image(lg, dl, props, size)
            for lg, dl, props, size in zip(
                logits.split(sizes), deltas.split(sizes), proposals, image_sizes, strict=True
            )
        ]

    def _detect_image(
        self, logits: Tensor, deltas: Tensor, rois: Tensor, image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Class-wise thresholding and NMS of one image: logits (R, C [+1]), deltas (R, C, 4)."""
        cfg = self.test_cfg
        if self.score_activation == "softmax":
            scores = logits.softmax(dim=1)[:, : self.num_classes]
        else:
            scores = logits.sigmoid()
        boxes = self.box_coder.decode(deltas, rois[:, None, :])  # (R, C, 4)
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), (int(image_size[0]), int(image_size[1])))
        flat_scores = scores.reshape(-1)
        candidates = (flat_scores > cfg.score_thr).nonzero().squeeze(1)
        labels = candidates % self.num_classes
        boxes, flat_scores = boxes[candidates], flat_scores[candidates]
        keep = batched_nms(boxes, flat_scores, labels, cfg.nms_iou)[: cfg.max_per_img]
        return {"boxes": boxes[keep], "scores": flat_scores[keep], "labels": labels[keep]}
