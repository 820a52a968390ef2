"""Faster R-CNN end to end on tiny inputs: training steps, empty images, detections, the
two self-balance weights and the factory."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.losses import GIoUError, IoUError, L1Error
from alrp_lab.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from tests.models.helpers import check_detections, config_sections, random_images, random_targets

NUM_CLASSES = 3
TINY = dict(
    depth=18,
    base_width=16,
    fpn_channels=16,
    head_channels=16,
    roi_fc_channels=32,
    octave_base_scale=2,
    pre_nms_topk=100,
    num_proposals=50,
)


def _tiny(**kwargs) -> FasterRCNN:
    return build_faster_rcnn(NUM_CLASSES, **config_sections("faster_rcnn", **{**TINY, **kwargs}))


def _targets(seed: int, counts=(2, 3)) -> list[dict[str, torch.Tensor]]:
    return random_targets(seed, NUM_CLASSES, counts)


def _images(seed: int, batch: int = 2) -> torch.Tensor:
    return random_images(seed, batch)


KEYS = {
    "loss",
    "loss_cls",
    "loss_loc",
    "num_pos",
    "loss_rpn_cls",
    "loss_rpn_loc",
    "loss_roi_cls",
    "loss_roi_loc",
    "num_rpn_pos",
}


@pytest.mark.parametrize(
    ("cls_loss", "box_error", "self_balance", "wr"),
    [("alrp", "giou", True, None), ("ce", "l1", False, 1.0), ("ce", "giou", False, 10.0)],
)
def test_training_step(cls_loss: str, box_error: str, self_balance: bool, wr) -> None:
    torch.manual_seed(0)
    model = _tiny(loss=cls_loss, box_error=box_error, self_balance=self_balance, wr=wr)
    model.train()
    out = model(_images(1), _targets(2), image_sizes=[(64, 64), (60, 64)])
    assert set(out) == KEYS
    assert out["num_pos"] > 0 and out["num_rpn_pos"] > 0
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    torch.testing.assert_close(out["loss_cls"], out["loss_rpn_cls"] + out["loss_roi_cls"])
    torch.testing.assert_close(out["loss_loc"], out["loss_rpn_loc"] + out["loss_roi_loc"])
    rpn_w = 0.2 if cls_loss == "alrp" else 1.0
    expected = (
        rpn_w * (out["loss_rpn_cls"] + model.rpn_self_balance.value * out["loss_rpn_loc"])
        + out["loss_roi_cls"]
        + model.self_balance.value * out["loss_roi_loc"]
    )
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    for param in (
        model.backbone.conv1.weight,
        model.rpn.head.objectness.weight,
        model.rpn.head.bbox_pred.weight,
        model.roi_head.box_head.cls_score.weight,
        model.roi_head.box_head.bbox_pred.weight,
    ):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0


def test_loss_choices_reach_both_stages() -> None:
    alrp = _tiny(box_error="iou", tau=0.5, rpn_tau=0.7)
    assert isinstance(alrp.rpn.loss.box_error, IoUError) and alrp.rpn.loss.box_error.tau == 0.7
    assert isinstance(alrp.roi_head.loss.box_error, IoUError)
    assert alrp.roi_head.loss.box_error.tau == 0.5
    assert alrp.rpn.loss.sampler is None and alrp.roi_head.sampler is None
    # The authors' PseudoSampler adds no ground truth to aLRP's proposals.
    assert not alrp.roi_head.add_gt_as_proposals
    assert alrp.rpn.proposal_cfg.train_pre_nms_topk == 2000
    assert alrp.rpn.proposal_cfg.pre_nms_topk == TINY["pre_nms_topk"]
    assert alrp.rpn_weight == 0.2 and alrp.rpn.loss.box_coder.stds == (0.1, 0.1, 0.2, 0.2)
    baseline = _tiny(loss="ce", box_error="giou", self_balance=False, wr=10.0)
    assert isinstance(baseline.rpn.loss.box_error, L1Error)
    assert isinstance(baseline.roi_head.loss.box_error, GIoUError)
    assert baseline.self_balance.value == 10.0 and baseline.rpn_self_balance.value == 1.0
    assert baseline.rpn.loss.sampler.num == 256 and baseline.roi_head.sampler.num == 64
    assert baseline.roi_head.add_gt_as_proposals
    # detector.add_gt_as_proposals forces it either way (an ablation).
    assert _tiny(add_gt_as_proposals=True).roi_head.add_gt_as_proposals
    forced = _tiny(loss="ce", box_error="l1", self_balance=False, wr=1.0, add_gt_as_proposals=False)
    assert not forced.roi_head.add_gt_as_proposals
    assert baseline.rpn_weight == 1.0 and baseline.rpn.loss.box_coder.stds == (1.0,) * 4


@pytest.mark.parametrize(
    ("min_level", "strides"), [(2, (4, 8, 16, 32, 64)), (3, (8, 16, 32, 64, 128))]
)
def test_pyramid_levels(min_level: int, strides: tuple[int, ...]) -> None:
    # min_level 2: mmdetection's P2..P6 (C2 in, P6 max-pooled), RoIs pooled from P2..P5.
    torch.manual_seed(4)
    model = _tiny(min_level=min_level).train()
    assert model.rpn.anchor_generator.strides == strides
    assert model.roi_head.extractor.strides == strides[:-1]
    assert len(model.backbone.out_channels) == 6 - min_level
    assert len(model.fpn.extra_convs) == 0  # parameter-free extras
    features = model.fpn(model.backbone(_images(15)))
    assert [f.shape[-1] for f in features] == [64 // s for s in strides[:-1]] + [1]
    out = model(_images(15), _targets(16))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["num_rpn_pos"] > 0
    with pytest.raises(ValueError, match="min_level"):
        _tiny(min_level=4)


def test_two_self_balance_weights_are_separate_and_saved() -> None:
    model = _tiny()
    assert model.self_balance is not model.rpn_self_balance
    model.update_self_balance(
        {"loss_roi_cls": 0.6, "loss_roi_loc": 0.2, "loss_rpn_cls": 0.9, "loss_rpn_loc": 0.1}
    )
    assert model.self_balance.step_epoch() == pytest.approx(4.0)
    assert model.rpn_self_balance.step_epoch() == pytest.approx(10.0)
    state = model.state_dict()
    assert state["roi_head.loss.balance.weight"] == pytest.approx(4.0)
    assert state["rpn.loss.balance.weight"] == pytest.approx(10.0)


def test_grad_balance_of_roi_classifier_is_one() -> None:
    torch.manual_seed(3)
    model = _tiny(track_grad_balance=True).train()
    assert model.grad_balance() is None
    out = model(_images(4), _targets(5))
    out["loss"].backward()
    assert model.grad_balance() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("cls_loss", ["alrp", "ce"])
def test_image_without_ground_truth_in_batch(cls_loss: str) -> None:
    torch.manual_seed(6)
    kwargs = {} if cls_loss == "alrp" else {"box_error": "l1", "self_balance": False, "wr": 1.0}
    model = _tiny(loss=cls_loss, **kwargs).train()
    targets = _targets(7, counts=(2, 0))
    out = model(_images(8), targets)
    out["loss"].backward()
    assert out["num_rpn_pos"] > 0 and torch.isfinite(out["loss"])
    # The baselines add the ground truths to the proposals, so their RoI stage always has
    # positives; aLRP's only has those an untrained RPN happens to propose.
    if cls_loss == "ce":
        assert out["num_pos"] >= 2


def test_whole_batch_without_ground_truth_gives_zero_alrp_loss() -> None:
    model = _tiny().train()
    out = model(_images(9), _targets(10, counts=(0, 0)))
    out["loss"].backward()
    assert out["num_pos"] == 0 and out["num_rpn_pos"] == 0 and out["loss"] == 0
    for param in (model.rpn.head.objectness.bias, model.roi_head.box_head.cls_score.bias):
        assert torch.equal(param.grad, torch.zeros_like(param))


@pytest.mark.parametrize("cls_loss", ["alrp", "ce"])
def test_eval_output_format_and_limits(cls_loss: str) -> None:
    torch.manual_seed(11)
    kwargs = {} if cls_loss == "alrp" else {"box_error": "l1", "self_balance": False, "wr": 1.0}
    model = _tiny(loss=cls_loss, score_thr=0.0, max_per_img=7, **kwargs).eval()
    sizes = [(40, 50), (64, 64)]
    detections = model(_images(12), image_sizes=sizes)
    check_detections(detections, sizes, max_per_img=7, num_classes=NUM_CLASSES)


def test_bad_inputs_raise_clear_errors() -> None:
    model = _tiny().train()
    with pytest.raises(ValueError, match="needs targets"):
        model(_images(13))
    bad = _targets(14)
    bad[0]["labels"] = torch.tensor([0, NUM_CLASSES])
    with pytest.raises(ValueError, match="contiguous"):
        model(_images(13), bad)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64), _targets(14))
    with pytest.raises(ValueError, match="trains with loss in"):
        build_faster_rcnn(NUM_CLASSES, **config_sections("faster_rcnn", loss="focal"))
    with pytest.raises(ValueError, match="IoU-based"):
        build_faster_rcnn(
            NUM_CLASSES, **config_sections("faster_rcnn", loss="alrp", box_error="l1")
        )
