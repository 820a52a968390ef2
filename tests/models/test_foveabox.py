"""FoveaBox on tiny inputs: box coding, priors, training step, detections, the factory."""

from __future__ import annotations

import math

import pytest
import torch

from alrp_lab.assigners import FoveaAssigner
from alrp_lab.losses import build_box_error, sigmoid_focal_loss
from alrp_lab.models.dense_loss import DenseDetectionLoss
from alrp_lab.models.foveabox import (
    FOVEA_BASE_EDGES,
    FOVEA_SCALE_RANGES,
    FoveaBox,
    FoveaBoxCoder,
    FoveaPriorGenerator,
    build_foveabox,
)
from alrp_lab.ops.box_coder import BoxCoder
from tests.models.helpers import check_detections, config_sections, random_images

NUM_CLASSES = 3
TINY = dict(depth=18, base_width=16, fpn_channels=32, head_convs=1, head_channels=32)


def _tiny(**kwargs) -> FoveaBox:
    return build_foveabox(NUM_CLASSES, **config_sections("foveabox", **{**TINY, **kwargs}))


def _targets(counts=(3, 1)) -> list[dict[str, torch.Tensor]]:
    """Boxes on a 64 x 64 image whose foveae hold P3 cell centres (positives guaranteed)."""
    boxes = [[4.0, 4, 40, 44], [30, 10, 60, 30], [8, 36, 30, 60]]
    return [
        {
            "boxes": torch.tensor(boxes[:g]).reshape(-1, 4),
            "labels": torch.tensor([0, 2, 1][:g], dtype=torch.long),
        }
        for g in counts
    ]


def _images(seed: int, batch: int = 2) -> torch.Tensor:
    return random_images(seed, batch)


def test_coder_hand_case_and_clamp() -> None:
    coder = FoveaBoxCoder()
    prior = torch.tensor([[0.0, 0, 32, 32]])  # location (16, 16), base edge 16
    box = torch.tensor([[8.0, 12, 48, 20]])  # sides 8, 4, 32, 4 px from the location
    deltas = coder.encode(box, prior)
    torch.testing.assert_close(deltas, torch.tensor([[0.5, 0.25, 2.0, 0.25]]).log())
    torch.testing.assert_close(coder.decode(deltas, prior), box)
    torch.testing.assert_close(coder.decode(torch.zeros(1, 4), prior), prior)
    # Distances beyond 16 base edges, or a location outside its box, hit the clamp.
    far = torch.tensor([[-1000.0, 17, 1000, 15.5]])
    expected = torch.tensor([16.0, 1 / 16, 16.0, 1 / 16]).log()
    torch.testing.assert_close(coder.encode(far, prior)[0], expected)
    assert torch.isfinite(coder.decode(torch.full((1, 4), 1e4), prior)).all()


def test_coder_round_trip_random_float64() -> None:
    gen = torch.Generator().manual_seed(20)
    coder = FoveaBoxCoder()
    centres = torch.rand(200, 2, generator=gen, dtype=torch.float64) * 500
    edges = 2.0 ** torch.randint(4, 9, (200, 1), generator=gen).double()
    priors = torch.cat([centres - edges, centres + edges], dim=1)
    # Sides between 1/16 and 16 base edges from the location: inside the clamp.
    ratios = torch.exp(torch.empty(200, 4, dtype=torch.float64).uniform_(-2.7, 2.7, generator=gen))
    reach = ratios * edges
    boxes = torch.cat([centres - reach[:, :2], centres + reach[:, 2:]], dim=1)
    deltas = coder.encode(boxes, priors)
    torch.testing.assert_close(deltas, ratios.log())
    torch.testing.assert_close(coder.decode(deltas, priors), boxes)


def test_prior_generator_layout() -> None:
    priors = FoveaPriorGenerator((8, 16), (16, 32))([(2, 3), (1, 2)], dtype=torch.float64)
    assert [p.shape for p in priors] == [(6, 4), (2, 4)]
    # Row (y, x) = (1, 2) of level 0: centre (2.5 * 8, 1.5 * 8), side 2 * 16.
    torch.testing.assert_close(priors[0][1 * 3 + 2], torch.tensor([4.0, -4, 36, 28]).double())
    torch.testing.assert_close(priors[1][1], torch.tensor([-8.0, -24, 56, 40]).double())
    with pytest.raises(ValueError, match="feature maps"):
        FoveaPriorGenerator((8, 16), (16, 32))([(2, 3)])


@pytest.mark.parametrize(
    ("cls_loss", "box_error"),
    [("alrp", "giou"), ("alrp", "iou"), ("ap", "smooth_l1"), ("focal", "smooth_l1")],
)
def test_training_step(cls_loss: str, box_error: str) -> None:
    torch.manual_seed(0)
    model = _tiny(loss=cls_loss, box_error=box_error).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model(_images(1), _targets())
    # aLRP also reports its Eloc diagnostics (the training log writes them).
    eloc = {"eloc_mean", "eloc_over_one"} if cls_loss == "alrp" else set()
    assert set(out) == {"loss", "loss_cls", "loss_loc", "num_pos"} | eloc
    assert out["num_pos"] > 0
    assert torch.isfinite(out["loss"]) and out["loss"] > 0 and out["loss_loc"] > 0
    out["loss"].backward()
    for param in (model.head.cls_logits.weight, model.head.bbox_pred.weight):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    optimizer.step()


def test_positives_are_the_fovea_assigners() -> None:
    model = _tiny().train()
    targets = _targets()
    out = model(_images(2), targets)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    priors = FoveaPriorGenerator()(sizes)
    counts = [p.shape[0] for p in priors]
    assigner = FoveaAssigner((8, 16, 32, 64, 128), FOVEA_SCALE_RANGES, 0.4)
    expected = sum(
        assigner.assign(torch.cat(priors), t["boxes"], counts).num_positives for t in targets
    )
    assert out["num_pos"] == expected


def test_smooth_l1_loss_matches_hand_targets() -> None:
    # One P3 positive: its deltas, its target log-distances, and beta-0.11 smooth L1 by hand
    # (the authors' FoveaBox value, which conf/experiment and Table 7 set).
    model = _tiny(loss="focal", box_error="smooth_l1", beta=0.11, coord_reduction="sum").train()
    box = torch.tensor([[20.0, 20, 36, 36]])  # fovea [24.8, 31.2]^2 holds centre (28, 28)
    captured: dict[str, list[torch.Tensor]] = {}

    def keep_deltas(module, inputs, outputs) -> None:
        captured["reg"] = outputs[1]

    hook = model.head.register_forward_hook(keep_deltas)
    out = model(_images(3, batch=1), [{"boxes": box, "labels": torch.tensor([1])}])
    hook.remove()
    assert out["num_pos"] == 1
    pred = captured["reg"][0][0, 3 * 8 + 3]  # P3 cell (3, 3)
    target = torch.log(torch.tensor([8.0, 8, 8, 8]) / 16)
    diff = (pred - target).abs()
    by_hand = torch.where(diff < 0.11, 0.5 * diff**2 / 0.11, diff - 0.5 * 0.11).sum()
    torch.testing.assert_close(out["loss_loc"], by_hand.detach())


def test_grad_balance_alrp_is_one() -> None:
    torch.manual_seed(3)
    model = _tiny(loss="alrp", track_grad_balance=True).train()
    assert model.grad_balance() is None
    out = model(_images(4), _targets())
    out["loss"].backward()
    assert model.grad_balance() == pytest.approx(1.0, abs=1e-4)


def test_image_without_ground_truth() -> None:
    torch.manual_seed(6)
    model = _tiny(loss="alrp").train()
    out = model(_images(8), _targets(counts=(2, 0)))
    out["loss"].backward()
    assert out["num_pos"] > 0 and torch.isfinite(out["loss"])

    empty = model(_images(9), _targets(counts=(0, 0)))
    model.zero_grad()
    empty["loss"].backward()
    assert empty["num_pos"] == 0 and empty["loss"] == 0
    bias_grad = model.head.cls_logits.bias.grad
    assert torch.equal(bias_grad, torch.zeros_like(bias_grad))
    # Focal Loss still learns the background from an image without objects.
    focal = _tiny(loss="focal", box_error="smooth_l1").train()
    out = focal(_images(9), _targets(counts=(0, 0)))
    assert out["num_pos"] == 0 and out["loss"] > 0 and out["loss_loc"] == 0
    # mmdetection's FoveaHead divides Focal Loss by positives + images: two here.
    logits = {}
    hook = focal.head.register_forward_hook(lambda m, i, o: logits.update(cls=o[0]))
    out = focal(_images(9), _targets(counts=(0, 0)))
    hook.remove()
    flat = torch.cat(logits["cls"], dim=1).reshape(-1)  # levels of (B, A_l, C)
    score_loss = focal.loss._score_loss
    background = torch.zeros_like(flat, dtype=torch.long)
    by_hand = sigmoid_focal_loss(flat, background, score_loss.alpha, score_loss.gamma) / 2
    torch.testing.assert_close(out["loss_cls"], by_hand.detach())


def test_eval_output_format_and_clipping() -> None:
    torch.manual_seed(11)
    # score_thr 0: an untrained head scores ~prior_prob (0.01) everywhere.
    model = _tiny(score_thr=0.0, max_per_img=7).eval()
    sizes = [(40, 50), (64, 64)]
    detections = model(_images(12), image_sizes=sizes)
    check_detections(detections, sizes, max_per_img=7, num_classes=NUM_CLASSES)
    default = _tiny().eval()
    assert default(_images(13, batch=1))[0]["boxes"].shape == (0, 4)


def test_factory_wiring() -> None:
    model = _tiny()
    assert model.head.num_anchors == 1
    assert model.assigner.sigma == 0.4 and model.assigner.scale_ranges[0] == (1.0, 64.0)
    assert model.anchor_generator.base_edges == tuple(float(e) for e in FOVEA_BASE_EDGES)
    assert isinstance(model.loss.box_coder, FoveaBoxCoder)
    assert model.self_balance.value == 50.0
    fixed = _tiny(loss="focal", box_error="smooth_l1", self_balance=False).self_balance
    assert fixed.value == 1.0 and not fixed.enabled
    custom = _tiny(scale_ranges=[[1, 32], [16, 64], [32, 128], [64, 256], [128, 512]], sigma=0.6)
    assert custom.assigner.scale_ranges[1] == (16.0, 64.0) and custom.assigner.sigma == 0.6
    assert custom.loss._score_loss is None  # aLRP by default
    # FoveaBox's Focal Loss settings come from the config (Table 7 sets 0.4 and 1.5).
    focal = _tiny(loss="focal", box_error="smooth_l1", alpha=0.4, gamma=1.5, beta=0.11).loss
    assert focal._score_loss.alpha == 0.4 and focal._score_loss.gamma == 1.5
    assert focal.box_error.beta == pytest.approx(0.11)
    assert math.isclose(FoveaBoxCoder().log_clip, math.log(1000 / 16))


def test_user_errors_are_clear(tmp_path) -> None:
    model = _tiny().train()
    with pytest.raises(ValueError, match="FoveaBox in training mode needs targets"):
        model(_images(14))
    bad = _targets()
    bad[0]["labels"] = torch.tensor([0, 1, NUM_CLASSES])
    with pytest.raises(ValueError, match="labels must lie in"):
        model(_images(14), bad)
    with pytest.raises(ValueError, match="one scale range and one base edge per stride"):
        _tiny(scale_ranges=((1, 64), (32, 128)))
    with pytest.raises(FileNotFoundError, match="backbone.weights"):
        _tiny(weights=tmp_path / "missing.pth")
    loss = DenseDetectionLoss("alrp", build_box_error("giou"), None, BoxCoder())
    with pytest.raises(ValueError, match="FoveaBoxCoder"):
        FoveaBox(
            model.backbone,
            model.fpn,
            NUM_CLASSES,
            None,
            FoveaPriorGenerator(),
            FoveaAssigner(),
            loss,
        )
    with pytest.raises(ValueError, match="strides"):
        FoveaBox(
            model.backbone,
            model.fpn,
            NUM_CLASSES,
            None,
            FoveaPriorGenerator(),
            FoveaAssigner((4, 8, 16, 32, 64)),
            model.loss,
        )
