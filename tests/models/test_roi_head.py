"""RoI head: level mapping, pooling, training targets, both losses against direct
computations, and detections."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alrp_lab.assigners import MaxIoUAssigner
from alrp_lab.losses import GIoUError, L1Error, SelfBalance, alrp_loss
from alrp_lab.models.postprocess import TestConfig
from alrp_lab.models.roi_head import BoxHead, RoIFeatureExtractor, RoIHead, RoILoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import elementwise_generalized_box_iou
from alrp_lab.ops.roi_align import roi_align

NUM_CLASSES = 3


def _head(cls_loss: str = "alrp", sampler=None, test_cfg=None, channels: int = 4) -> RoIHead:
    error = GIoUError(0.5) if cls_loss == "alrp" else L1Error()
    loss = RoILoss(cls_loss, error, SelfBalance(50.0), BoxCoder(), track_grad_balance=True)
    return RoIHead(
        RoIFeatureExtractor((8, 16, 32, 64), output_size=2),
        BoxHead(channels, 2, 16, NUM_CLASSES, background=cls_loss == "ce"),
        MaxIoUAssigner(0.5, 0.5, low_quality_matches=False),
        loss,
        sampler=sampler,
        test_cfg=test_cfg,
    )


def test_level_mapping_hand_case() -> None:
    extractor = RoIFeatureExtractor((8, 16, 32, 64), canonical_scale=224, canonical_level=4)
    sides = torch.tensor([0.0, 50.0, 111.0, 112.0, 224.0, 447.0, 448.0, 5000.0])
    boxes = torch.stack((torch.zeros(8), torch.zeros(8), sides, sides), dim=1)
    # k = floor(4 + log2(s / 224)) clamped to P3..P6, as an index from P3.
    assert extractor.map_levels(boxes).tolist() == [0, 0, 0, 0, 1, 1, 2, 3]
    wide = torch.tensor([[0.0, 0.0, 448.0, 112.0]])  # sqrt(area) = 224
    assert extractor.map_levels(wide).tolist() == [1]


def test_level_mapping_from_p2_is_mmdetections_finest_scale_rule() -> None:
    # mmdetection's SingleRoIExtractor: floor(log2(s / 56 + 1e-6)) clamped to P2..P5.
    extractor = RoIFeatureExtractor((4, 8, 16, 32), canonical_scale=224, canonical_level=4)
    sides = torch.tensor([0.0, 55.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 5000.0])
    boxes = torch.stack((torch.zeros(9), torch.zeros(9), sides, sides), dim=1)
    assert extractor.map_levels(boxes).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    gen = torch.Generator().manual_seed(32)
    sides = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(0, 7, generator=gen))
    boxes = torch.stack((torch.zeros(500), torch.zeros(500), sides, sides), dim=1)
    mmdet = torch.floor(torch.log2(sides / 56 + 1e-6)).clamp(0, 3).long()
    assert torch.equal(extractor.map_levels(boxes), mmdet)


def test_extractor_pools_each_roi_from_its_level() -> None:
    gen = torch.Generator().manual_seed(31)
    features = [torch.randn(2, 3, 64 // s, 64 // s, generator=gen) for s in (8, 16, 32, 64)]
    extractor = RoIFeatureExtractor((8, 16, 32, 64), output_size=3, canonical_scale=16)
    rois = torch.tensor(
        [[1.0, 2, 3, 12, 14], [0.0, 0, 0, 40, 30], [1.0, 5, 5, 64, 64], [0.0, 10, 10, 18, 20]]
    )
    levels = extractor.map_levels(rois[:, 1:])
    assert levels.unique().numel() > 1  # the case exercises several levels
    pooled = extractor(features, rois)
    for k, level in enumerate(levels.tolist()):
        expected = roi_align(features[level], rois[k : k + 1], 3, 1 / (8 * 2**level), 0)
        torch.testing.assert_close(pooled[k : k + 1], expected)
    assert extractor(features, rois[:0]).shape == (0, 3, 3, 3)
    with pytest.raises(ValueError, match="powers of two"):
        RoIFeatureExtractor((8, 24))


def test_training_rois_hand_case() -> None:
    head = _head()
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    classes = torch.tensor([2, 0])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 12.0],  # IoU 0.83 with gt 0: class 2
            [20.0, 20.0, 40.0, 60.0],  # IoU 0.5 with gt 1: class 0 (>= 0.5)
            [50.0, 50.0, 60.0, 60.0],  # background
        ]
    )
    rois, labels, matched = head.select_training_rois(
        [proposals, proposals[:1]], [gt, gt[:0]], [classes, classes[:0]]
    )
    torch.testing.assert_close(rois[0], torch.cat((gt, proposals)))  # gts come first
    assert labels.tolist() == [2, 0, 2, 0, -1, -1]
    torch.testing.assert_close(matched[:4], torch.cat((gt, gt)))
    assert torch.equal(matched[4:], torch.zeros(2, 4))

    sampled = _head("ce", sampler=RandomSampler(3, 0.34))
    rois, labels, _ = sampled.select_training_rois([proposals], [gt], [classes])
    # 4 positives (2 of them the added gts) and 1 negative: one positive is drawn, and the
    # only negative cannot fill the other two places.
    assert rois[0].shape == (2, 4) and labels.sort().values.tolist()[0] == -1
    assert int((labels >= 0).sum()) == 1


def test_alrp_loss_matches_direct_computation() -> None:
    gen = torch.Generator().manual_seed(32)
    loss = RoILoss("alrp", GIoUError(0.5), SelfBalance(10.0), BoxCoder())
    rois = torch.tensor(
        [[0.0, 0, 10, 10], [5, 5, 30, 25], [2, 2, 9, 12], [40, 40, 60, 70]], dtype=torch.float64
    )
    labels = torch.tensor([1, -1, 2, 1])
    gt = torch.tensor(
        [[1.0, 0, 11, 10], [0, 0, 0, 0], [1, 2, 9, 13], [38, 42, 60, 66]], dtype=torch.float64
    )
    logits = torch.randn(4, NUM_CLASSES, generator=gen, dtype=torch.float64)
    deltas = torch.randn(4, NUM_CLASSES, 4, generator=gen, dtype=torch.float64) * 0.2
    out = loss(logits, deltas, rois, labels, gt)

    # Brute force: pair (r, c) is positive iff c is RoI r's class; Eloc of that class's box.
    pair_labels, errors = [], []
    for r in range(4):
        for c in range(NUM_CLASSES):
            positive = int(labels[r]) == c
            pair_labels.append(int(positive))
            if positive:
                box = BoxCoder().decode(deltas[r, c][None], rois[r][None])
                errors.append(1 - elementwise_generalized_box_iou(box, gt[r][None])[0])
    cls, loc = alrp_loss(logits.reshape(-1), torch.tensor(pair_labels), torch.stack(errors))
    assert out["num_pos"] == 3
    torch.testing.assert_close(out["loss_cls"], cls)
    torch.testing.assert_close(out["loss_loc"], loc)
    torch.testing.assert_close(out["loss"], cls + 10.0 * loc)


def test_ce_loss_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(33)
    loss = RoILoss("ce", L1Error(), SelfBalance(2.0, enabled=False), BoxCoder())
    rois = torch.tensor([[0.0, 0, 10, 10], [5, 5, 30, 25], [2, 2, 9, 12]], dtype=torch.float64)
    labels = torch.tensor([0, -1, 2])
    gt = torch.tensor([[1.0, 0, 11, 10], [0, 0, 0, 0], [1, 2, 9, 13]], dtype=torch.float64)
    logits = torch.randn(3, NUM_CLASSES + 1, generator=gen, dtype=torch.float64)
    deltas = torch.randn(3, NUM_CLASSES, 4, generator=gen, dtype=torch.float64)
    out = loss(logits, deltas, rois, labels, gt)
    ce = F.cross_entropy(logits, torch.tensor([0, NUM_CLASSES, 2]))
    pos = torch.tensor([0, 2])
    target = BoxCoder().encode(gt[pos], rois[pos])
    l1 = (deltas[pos, labels[pos]] - target).abs().sum() / 3
    torch.testing.assert_close(out["loss_cls"], ce)
    torch.testing.assert_close(out["loss_loc"], l1)
    torch.testing.assert_close(out["loss"], ce + 2.0 * l1)
    with pytest.raises(ValueError, match=r"\(R, 4\)"):
        loss(logits[:, :3], deltas, rois, labels, gt)


def test_alrp_gradient_balance_and_no_positive_batch() -> None:
    gen = torch.Generator().manual_seed(34)
    head = _head()
    features = [torch.randn(1, 4, 64 // s, 64 // s, generator=gen) for s in (8, 16, 32, 64)]
    proposals = [torch.tensor([[0.0, 0, 20, 20], [10, 10, 40, 40], [30, 5, 60, 30]])]
    targets = [{"boxes": torch.tensor([[2.0, 1, 20, 22]]), "labels": torch.tensor([1])}]
    out = head(features, proposals, [(64, 64)], targets)
    out["loss"].backward()
    assert out["num_pos"] >= 1
    assert head.loss.grad_balance() == pytest.approx(1.0, abs=1e-5)

    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    head.zero_grad()
    out = head(features, proposals, [(64, 64)], empty)
    out["loss"].backward()
    assert out["num_pos"] == 0 and out["loss"] == 0
    assert torch.equal(head.box_head.cls_score.bias.grad, torch.zeros(NUM_CLASSES))


def test_detections_threshold_nms_and_limits() -> None:
    head = _head(test_cfg=TestConfig(score_thr=0.3, nms_iou=0.5, max_per_img=3))
    rois = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 50, 50], [5, 5, 15, 15]])
    logits = torch.tensor(
        [[3.0, -5, -5], [2.0, 1.0, -5], [-5.0, -5, 0.5], [-5.0, -0.1, -5]]
    )  # sigmoid: 0.95 | 0.88, 0.73 | 0.62 | 0.48
    deltas = torch.zeros(4, NUM_CLASSES, 4)
    det = head._detect_image(logits, deltas, rois, (40, 45))
    # Class 0: RoI 1 is suppressed by RoI 0; class 1 keeps RoIs 1 and 3; class 2 keeps RoI 2
    # (clipped). Sorted by score and cut to 3.
    assert det["labels"].tolist() == [0, 1, 2]
    torch.testing.assert_close(det["scores"], torch.tensor([3.0, 1.0, 0.5]).sigmoid())
    torch.testing.assert_close(det["boxes"][2], torch.tensor([20.0, 20.0, 45.0, 40.0]))

    ce_head = _head("ce", sampler=RandomSampler(8, 0.25), test_cfg=TestConfig(score_thr=0.0))
    ce_logits = torch.tensor([[0.0, 0.0, 0.0, 10.0]])  # background wins
    det = ce_head._detect_image(ce_logits, torch.zeros(1, NUM_CLASSES, 4), rois[:1], (40, 40))
    assert det["scores"].max() < 1e-4 and det["labels"].tolist() == [0, 1, 2]


def test_head_loss_mismatch_raises() -> None:
    loss = RoILoss("alrp", GIoUError(), SelfBalance(), BoxCoder())
    with pytest.raises(ValueError, match="background logit"):
        RoIHead(
            RoIFeatureExtractor(),
            BoxHead(4, 7, 8, NUM_CLASSES, background=True),
            MaxIoUAssigner(),
            loss,
        )
    with pytest.raises(ValueError, match="RoI loss"):
        RoILoss("focal", GIoUError(), SelfBalance(), BoxCoder())
