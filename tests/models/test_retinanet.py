"""RetinaNet end to end on tiny inputs: training step, detections, edge cases, the factory."""

from __future__ import annotations

import pytest
import torch

from alrp_lab.models.postprocess import TestConfig, postprocess_image
from alrp_lab.models.retinanet import RetinaHead, RetinaNet, build_retinanet
from alrp_lab.ops.box_coder import BoxCoder
from tests.models.helpers import check_detections, config_sections, random_images, random_targets

NUM_CLASSES = 3
TINY = dict(depth=18, base_width=16, fpn_channels=32, head_convs=1, head_channels=32)


def _tiny(**kwargs) -> RetinaNet:
    return build_retinanet(NUM_CLASSES, **config_sections("retinanet", **{**TINY, **kwargs}))


def _targets(seed: int, counts=(2, 3)) -> list[dict[str, torch.Tensor]]:
    return random_targets(seed, NUM_CLASSES, counts)


def _images(seed: int, batch: int = 2) -> torch.Tensor:
    return random_images(seed, batch)


@pytest.mark.parametrize(
    ("cls_loss", "box_error", "assigner"),
    [
        ("alrp", "giou", "atss"),
        ("ap", "smooth_l1", "max_iou"),
        ("focal", "l1", "max_iou"),
        ("ce", "iou", "atss"),
    ],
)
def test_training_step(cls_loss: str, box_error: str, assigner: str) -> None:
    torch.manual_seed(0)
    model = _tiny(loss=cls_loss, box_error=box_error, assigner=assigner).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(_images(1), _targets(2))
    # aLRP also reports its Eloc diagnostics (the training log writes them).
    eloc = {"eloc_mean", "eloc_over_one"} if cls_loss == "alrp" else set()
    assert set(out) == {"loss", "loss_cls", "loss_loc", "num_pos"} | eloc
    assert out["num_pos"] > 0
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    head_grad = model.head.cls_logits.weight.grad
    assert head_grad is not None and torch.isfinite(head_grad).all()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    optimizer.step()


def test_grad_balance_alrp_is_one() -> None:
    torch.manual_seed(3)
    model = _tiny(loss="alrp", track_grad_balance=True).train()
    assert model.grad_balance() is None
    out = model(_images(4), _targets(5))
    assert out["num_pos"] > 0
    out["loss"].backward()
    assert model.grad_balance() == pytest.approx(1.0, abs=1e-4)


def test_empty_ground_truth_image_in_batch() -> None:
    torch.manual_seed(6)
    model = _tiny(loss="alrp").train()
    targets = _targets(7, counts=(2, 0))
    assert targets[1]["boxes"].shape == (0, 4)
    out = model(_images(8), targets)
    out["loss"].backward()
    assert out["num_pos"] > 0 and torch.isfinite(out["loss"])


def test_whole_batch_without_ground_truth_gives_zero_alrp_loss() -> None:
    model = _tiny(loss="alrp").train()
    out = model(_images(9), _targets(10, counts=(0, 0)))
    out["loss"].backward()
    assert out["num_pos"] == 0 and out["loss"] == 0
    assert torch.equal(
        model.head.cls_logits.bias.grad, torch.zeros_like(model.head.cls_logits.bias)
    )


def test_eval_output_format_and_clipping() -> None:
    torch.manual_seed(11)
    # score_thr 0: an untrained head scores ~prior_prob (0.01) everywhere.
    model = _tiny(score_thr=0.0, max_per_img=7).eval()
    sizes = [(40, 50), (64, 64)]
    detections = model(_images(12), image_sizes=sizes)
    check_detections(detections, sizes, max_per_img=7, num_classes=NUM_CLASSES)


def test_eval_default_threshold_drops_prior_scores() -> None:
    model = _tiny().eval()
    detections = model(_images(13, batch=1))
    assert detections[0]["boxes"].shape == (0, 4)


def test_anchors_per_location_by_assigner() -> None:
    assert _tiny(assigner="atss").head.num_anchors == 2
    assert _tiny(assigner="max_iou").head.num_anchors == 6
    assert _tiny(assigner="atss", scales_per_octave=3).head.num_anchors == 3


def test_head_prior_and_output_layout() -> None:
    head = RetinaHead(8, num_anchors=2, num_classes=3, num_convs=2, feat_channels=8)
    cls, reg = head([torch.randn(1, 8, 4, 5), torch.randn(1, 8, 2, 3)])
    assert [c.shape for c in cls] == [(1, 40, 3), (1, 12, 3)]
    assert [r.shape for r in reg] == [(1, 40, 4), (1, 12, 4)]
    torch.testing.assert_close(
        head.cls_logits.bias, torch.full((6,), -torch.log(torch.tensor(99.0)).item())
    )
    # Row (y, x, anchor) = (1, 2, 1) reads channel block of anchor 1 at pixel (1, 2).
    raw = head.cls_logits(head.cls_convs(torch.ones(1, 8, 4, 5)))
    flat = head([torch.ones(1, 8, 4, 5)])[0][0]
    torch.testing.assert_close(flat[0, (1 * 5 + 2) * 2 + 1], raw[0, 3:6, 1, 2])


def test_self_balance_wiring() -> None:
    assert _tiny(loss="alrp").self_balance.value == 50.0
    fixed = _tiny(loss="alrp", self_balance=False, wr=10.0).self_balance
    assert fixed.value == 10.0 and not fixed.enabled
    assert _tiny(loss="focal", self_balance=False).self_balance.value == 1.0


def test_user_errors_are_clear(tmp_path) -> None:
    model = _tiny().train()
    with pytest.raises(ValueError, match="needs targets"):
        model(_images(14))
    bad = _targets(15)
    bad[0]["labels"] = torch.tensor([0, NUM_CLASSES])
    with pytest.raises(ValueError, match="labels must lie in"):
        model(_images(14), bad)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(2, 64, 64))
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        _tiny(weights=tmp_path / "missing.pth")


def test_postprocess_hand_case() -> None:
    # Level 0: 3 anchors x 2 classes; level 1: 1 anchor. Zero deltas decode to the anchors.
    anchors = [
        torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]]),
        torch.tensor([[-5.0, -5, 70, 70]]),
    ]
    logit = lambda p: torch.logit(torch.tensor(p)).item()  # noqa: E731
    cls = [
        torch.tensor(
            [[logit(0.9), logit(0.01)], [logit(0.8), logit(0.7)], [logit(0.04), logit(0.6)]]
        ),
        torch.tensor([[logit(0.3), logit(0.02)]]),
    ]
    deltas = [torch.zeros(3, 4), torch.zeros(1, 4)]
    cfg = TestConfig(score_thr=0.05, nms_iou=0.5, pre_nms_topk=3, max_per_img=100)
    det = postprocess_image(cls, deltas, anchors, (64, 64), BoxCoder(), cfg)
    # Level 0 keeps its top 3 of 4 candidates (0.6 goes); class 0's anchor 1 (0.8)
    # overlaps anchor 0 (0.9) with IoU 9/11 and is suppressed, class 1's (0.7) survives;
    # level 1's box is clipped to the image; 0.04 and 0.02 are under score_thr.
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7, 0.3]))
    assert det["labels"].tolist() == [0, 1, 0]
    torch.testing.assert_close(
        det["boxes"], torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 64, 64]])
    )
    capped = postprocess_image(
        cls, deltas, anchors, (64, 64), BoxCoder(), TestConfig(max_per_img=2)
    )
    assert capped["scores"].tolist() == pytest.approx([0.9, 0.7])  # 0.6 is back, then cut
