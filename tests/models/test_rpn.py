"""RPN: head layout, targets and losses against direct computations, proposals by hand, and
the random sampler of the baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alrp_lab.assigners import AssignResult, MaxIoUAssigner
from alrp_lab.losses import GIoUError, L1Error, SelfBalance, alrp_loss
from alrp_lab.models.rpn import ProposalConfig, RegionProposalNetwork, RPNHead, RPNLoss
from alrp_lab.models.samplers import RandomSampler
from alrp_lab.ops.anchors import AnchorGenerator
from alrp_lab.ops.box_coder import BoxCoder
from alrp_lab.ops.boxes import elementwise_generalized_box_iou


def _rpn(cls_loss: str = "alrp", cfg: ProposalConfig | None = None, **loss_kwargs):
    generator = AnchorGenerator(strides=(8, 16), octave_base_scale=2, scales_per_octave=1)
    error = GIoUError(tau=0.7) if cls_loss == "alrp" else L1Error()
    loss = RPNLoss(cls_loss, error, SelfBalance(50.0), BoxCoder(), **loss_kwargs)
    head = RPNHead(8, generator.num_anchors_per_location, feat_channels=8)
    assigner = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3)
    return RegionProposalNetwork(head, generator, assigner, loss, cfg)


def test_head_outputs_line_up_with_anchors() -> None:
    rpn = _rpn()
    features = [torch.randn(2, 8, 4, 5), torch.randn(2, 8, 2, 3)]
    logits, deltas = rpn.head(features)
    anchors = rpn.anchor_generator([(4, 5), (2, 3)])
    for lg, dl, an in zip(logits, deltas, anchors, strict=True):
        assert lg.shape == (2, an.shape[0], 1) and dl.shape == (2, an.shape[0], 4)
    # Objectness of location (y, x), anchor a sits at row (y * W + x) * A + a.
    raw = rpn.head.objectness(rpn.head.convs(features[0]))  # (2, A, 4, 5)
    assert torch.equal(logits[0][1, (2 * 5 + 3) * 3 + 1, 0], raw[1, 1, 2, 3])
    # prior_prob = 0.01 for aLRP's RPN.
    assert torch.allclose(rpn.head.objectness.bias.sigmoid(), torch.full((3,), 0.01))


def test_proposals_hand_case() -> None:
    rpn = _rpn(cfg=ProposalConfig(pre_nms_topk=10, nms_iou=0.7, num_proposals=3))
    anchors = [
        torch.tensor(
            [
                [0.0, 0.0, 10.0, 10.0],  # best score
                [0.0, 0.0, 10.0, 11.0],  # IoU 0.91 with the first: suppressed
                [20.0, 20.0, 50.0, 50.0],  # clipped to the 40 x 40 image
                [45.0, 45.0, 60.0, 60.0],  # empty after clipping: dropped
                [30.0, 0.0, 40.0, 8.0],  # lowest kept score
            ]
        ),
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]),  # another level: never suppressed by level 0
    ]
    logits = [torch.tensor([[[5.0], [4.0], [3.0], [9.0], [1.0]]]), torch.tensor([[[2.0]]])]
    deltas = [torch.zeros(1, 5, 4), torch.zeros(1, 1, 4)]
    (proposals,) = rpn.propose(logits, deltas, anchors, [(40, 40)])
    expected = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [0, 0, 10, 10]])
    torch.testing.assert_close(proposals, expected)

    rpn.proposal_cfg = ProposalConfig(pre_nms_topk=1, nms_iou=0.7, num_proposals=10)
    (top1,) = rpn.propose(logits, deltas, anchors, [(40, 40)])
    # Level 0's top anchor is the one clipped away, so only level 1's survives.
    torch.testing.assert_close(top1, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))


def test_training_keeps_more_anchors_before_nms() -> None:
    # mmdetection's Faster R-CNN: the top 2000 anchors per level before NMS in training, 1000
    # at test time; here 3 and 1 of one level's 4 disjoint anchors.
    cfg = ProposalConfig(pre_nms_topk=1, nms_iou=0.7, num_proposals=10, train_pre_nms_topk=3)
    rpn = _rpn(cfg=cfg)
    anchors = [torch.tensor([[0.0, 0, 8, 8], [10, 0, 18, 8], [20, 0, 28, 8], [30, 0, 38, 8]])]
    logits = [torch.tensor([[[1.0], [4.0], [3.0], [2.0]]])]
    deltas = [torch.zeros(1, 4, 4)]
    (train,) = rpn.train().propose(logits, deltas, anchors, [(40, 40)])
    torch.testing.assert_close(train, anchors[0][[1, 2, 3]])
    (test,) = rpn.eval().propose(logits, deltas, anchors, [(40, 40)])
    torch.testing.assert_close(test, anchors[0][[1]])
    with pytest.raises(ValueError, match="train_pre_nms_topk"):
        ProposalConfig(train_pre_nms_topk=0)


def _hand_batch():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1.0 with gt 0: positive
            [0.0, 0.0, 10.0, 13.0],  # IoU 0.77: positive
            [0.0, 0.0, 10.0, 20.0],  # IoU 0.5: ignored (between 0.3 and 0.7)
            [30.0, 30.0, 40.0, 40.0],  # IoU 0.36 with gt 1, its best: low-quality positive
            [60.0, 60.0, 70.0, 70.0],  # background
        ]
    )
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [28.0, 28.0, 45.0, 45.0]])
    return anchors, gt


def test_alrp_loss_on_hand_targets_matches_direct_computation() -> None:
    anchors, gt = _hand_batch()
    rpn = _rpn("alrp")
    assign = rpn.assigner.assign(anchors, gt, [5])
    assert assign.matched_gt.tolist() == [0, 0, -2, 1, -1]
    gen = torch.Generator().manual_seed(21)
    logits = torch.randn(1, 5, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    deltas = torch.randn(1, 5, 4, generator=gen, dtype=torch.float64) * 0.3
    out = rpn.loss(logits, deltas, anchors.double(), [assign], [gt.double()])

    pos = torch.tensor([0, 1, 3])
    decoded = BoxCoder().decode(deltas[0, pos], anchors.double()[pos])
    targets = gt.double()[torch.tensor([0, 0, 1])]
    eloc = ((1 - elementwise_generalized_box_iou(decoded, targets)) / 2) / (1 - 0.7)
    labels = torch.tensor([1, 1, -1, 1, 0])
    cls, loc = alrp_loss(logits.detach().reshape(-1), labels, eloc)
    assert out["num_pos"] == 3
    torch.testing.assert_close(out["loss_cls"], cls)
    torch.testing.assert_close(out["loss_loc"], loc)
    torch.testing.assert_close(out["loss"], cls + 50.0 * loc)


def test_ce_loss_matches_brute_force() -> None:
    anchors, gt = _hand_batch()
    rpn = _rpn("ce", sampler=RandomSampler(256, 0.5))
    assign = rpn.assigner.assign(anchors, gt, [5])
    gen = torch.Generator().manual_seed(22)
    logits = torch.randn(1, 5, 1, generator=gen, dtype=torch.float64)
    deltas = torch.randn(1, 5, 4, generator=gen, dtype=torch.float64)
    rpn.loss.balance = SelfBalance(1.0, enabled=False)
    out = rpn.loss(logits, deltas, anchors.double(), [assign], [gt.double()])

    kept = torch.tensor([0, 1, 3, 4])  # the ignored anchor 2 is never sampled
    target = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(logits[0, kept, 0], target, reduction="sum") / 4
    pos = torch.tensor([0, 1, 3])
    enc = BoxCoder().encode(gt.double()[torch.tensor([0, 0, 1])], anchors.double()[pos])
    l1 = (deltas[0, pos] - enc).abs().sum() / 4
    torch.testing.assert_close(out["loss_cls"], bce)
    torch.testing.assert_close(out["loss_loc"], l1)
    assert out["num_pos"] == 3


@pytest.mark.parametrize("cls_loss", ["alrp", "ce"])
def test_forward_without_ground_truth(cls_loss: str) -> None:
    kwargs = {"sampler": RandomSampler(16, 0.5)} if cls_loss == "ce" else {}
    rpn = _rpn(cls_loss, ProposalConfig(num_proposals=7), **kwargs)
    features = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    proposals, losses = rpn(features, [(32, 32), (20, 28)], [torch.zeros(0, 4)] * 2)
    assert [p.shape[1] for p in proposals] == [4, 4] and all(p.shape[0] <= 7 for p in proposals)
    assert not any(p.requires_grad for p in proposals)
    assert proposals[1][:, 2].max() <= 28 and proposals[1][:, 3].max() <= 20
    losses["loss"].backward()
    assert losses["num_pos"] == 0
    grad = rpn.head.objectness.bias.grad
    if cls_loss == "alrp":
        assert losses["loss"] == 0 and torch.equal(grad, torch.zeros_like(grad))
    else:  # negatives still teach the CE objectness
        assert losses["loss"] > 0 and grad.abs().sum() > 0


def test_eval_forward_returns_no_loss() -> None:
    rpn = _rpn()
    proposals, losses = rpn([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)], [(32, 32)])
    assert losses is None and len(proposals) == 1


def test_bad_configuration_raises() -> None:
    with pytest.raises(ValueError, match="sampler"):
        RPNLoss("ce", L1Error(), SelfBalance(), BoxCoder())
    with pytest.raises(ValueError, match="RPN loss"):
        RPNLoss("focal", L1Error(), SelfBalance(), BoxCoder())
    with pytest.raises(ValueError, match="num_proposals"):
        ProposalConfig(num_proposals=0)
    with pytest.raises(ValueError, match="anchors per location"):
        RegionProposalNetwork(
            RPNHead(8, 2), AnchorGenerator(scales_per_octave=1), None, _rpn().loss
        )


# --- the baselines' random sampler ---------------------------------------------------------


def _matched(num_pos: int, num_neg: int, num_ignored: int, seed: int) -> torch.Tensor:
    codes = torch.cat(
        (
            torch.arange(num_pos) % 3,
            torch.full((num_neg,), -1),
            torch.full((num_ignored,), -2),
        )
    )
    return codes[torch.randperm(codes.numel(), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "expected"),
    [(200, 500, (128, 384)), (100, 500, (100, 412)), (300, 20, (128, 20)), (0, 600, (0, 512))],
)
def test_sampler_proportions(num_pos: int, num_neg: int, expected: tuple[int, int]) -> None:
    matched = _matched(num_pos, num_neg, 30, seed=num_pos + num_neg)
    sampler = RandomSampler(512, 0.25)
    pos, neg = sampler.sample(matched, torch.Generator().manual_seed(1))
    assert (pos.numel(), neg.numel()) == expected
    assert (matched[pos] >= 0).all() and (matched[neg] == -1).all()
    assert pos.unique().numel() == pos.numel() and neg.unique().numel() == neg.numel()


def test_sampler_is_random_but_reproducible() -> None:
    matched = _matched(50, 200, 0, seed=3)
    sampler = RandomSampler(32, 0.5)
    first = sampler.sample(matched, torch.Generator().manual_seed(4))
    again = sampler.sample(matched, torch.Generator().manual_seed(4))
    other = sampler.sample(matched, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_sampler_neg_pos_bound_and_subsample() -> None:
    matched = _matched(4, 100, 10, seed=6)
    pos, neg = RandomSampler(64, 0.5, neg_pos_ub=3).sample(matched)
    assert pos.numel() == 4 and neg.numel() == 12
    assign = AssignResult(matched, torch.rand(matched.numel()))
    sub = RandomSampler(20, 0.25).subsample(assign, torch.Generator().manual_seed(7))
    kept = sub.matched_gt != -2
    assert int(kept.sum()) == 20 and int(sub.positive_mask.sum()) == 4
    assert torch.equal(sub.matched_gt[kept], matched[kept])
    assert torch.equal(sub.max_iou, assign.max_iou)
    with pytest.raises(ValueError, match="pos_fraction"):
        RandomSampler(8, 1.5)
