"""rho (Spearman), the Table 5 bounds and the toy-example AP."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from alrp_lab.eval import evaluate_detections, evaluate_report
from alrp_lab.eval.coco import detection_table, ground_truth_table, load_detections
from alrp_lab.eval.correlation import average_ranks, mean_rho, spearman, toy_ap
from alrp_lab.eval.matching import match_detections
from tests.eval.conftest import make_coco

# Hand case AP per threshold (derived in test_coco.py): both TPs 253/303 at IoU 0.50, 0.55;
# with one TP at rank 1: 51/101; with one TP at rank 3: 17/101 (precision 1/3).
AP_BOTH, AP_RANK1, AP_RANK3 = 253 / 303, 51 / 101, 17 / 101


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(average_ranks(np.array([10.0, 20, 20, 5])), [2, 3.5, 3.5, 1])


def test_spearman_hand_cases():
    x = np.array([0.1, 0.4, 0.5, 0.9])
    assert spearman(x, x * 3 + 1) == 1.0
    assert spearman(x, -x) == -1.0
    # ranks (1, 2, 3, 4) and (1.5, 1.5, 3.5, 3.5): centred (-1.5, -.5, .5, 1.5), (-1, -1, 1, 1);
    # covariance 4, norms^2 5 and 4: rho = 4 / sqrt(20).
    assert spearman(x, np.array([1.0, 1, 2, 2])) == pytest.approx(4 / math.sqrt(20))
    assert math.isnan(spearman(x, np.ones(4)))  # constant ranks: 0/0
    assert math.isnan(spearman(x[:1], x[:1]))
    with pytest.raises(ValueError, match="equal lengths"):
        spearman(x, x[:3])


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_spearman_against_references(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.random(9), rng.random(9)
    # Without ties: the textbook 1 - 6 sum d^2 / (n (n^2 - 1)) on ordinal ranks.
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    assert spearman(x, y) == pytest.approx(1 - 6 * (d @ d) / (9 * 80), abs=1e-12)
    # With ties: Pearson of ranks counted by brute force.
    xt, yt = np.round(x * 3), np.round(y * 3)

    def ranks(v):
        return np.array([1 + (v < a).sum() + ((v == a).sum() - 1) / 2 for a in v])

    assert spearman(xt, yt) == pytest.approx(np.corrcoef(ranks(xt), ranks(yt))[0, 1], abs=1e-12)


def test_mean_rho_skips_undefined_classes():
    assert mean_rho([0.5, math.nan, -0.1]) == pytest.approx(0.2)
    assert math.isnan(mean_rho([math.nan])) and math.isnan(mean_rho([]))


def test_rho_hand_cases(hand_case):
    # TPs (score 0.9, IoU 0.72) and (0.7, 0.58): same order -> 1; reversed IoUs -> -1.
    gt, dets = hand_case()
    assert evaluate_detections(make_coco(gt), dets)["rho"] == 1.0
    gt, dets = hand_case(reverse=True)
    assert evaluate_detections(make_coco(gt), dets)["rho"] == -1.0
    # One TP only: rho undefined.
    assert math.isnan(evaluate_detections(make_coco(gt), dets[:2])["rho"])


def test_bounds_hand_case(hand_case):
    # The model gives its TP at IoU 0.60 .. 0.70 to d1 (the highest score): it is the upper
    # bound. The lower bound gives it to d3: 17/101 at those three thresholds.
    gt, dets = hand_case()
    m = evaluate_detections(make_coco(gt), dets, bounds=True)
    assert m["upper_AP"] == pytest.approx(m["AP"], abs=1e-15)
    assert m["upper_AP"] == pytest.approx((2 * AP_BOTH + 3 * AP_RANK1) / 10, abs=1e-12)
    assert m["lower_AP"] == pytest.approx((2 * AP_BOTH + 3 * AP_RANK3) / 10, abs=1e-12)
    # AP50 stays fixed; to rounding, since the backend (pycocotools or faster-coco-eval)
    # computes AP50 and the bounds are re-accumulated here.
    assert m["upper_AP50"] == pytest.approx(m["AP50"], abs=1e-12)
    assert m["lower_AP50"] == pytest.approx(m["AP50"], abs=1e-12)
    assert m["upper_AP75"] == m["lower_AP75"] == 0.0
    assert (m["upper_rho"], m["lower_rho"]) == (1.0, -1.0)
    # Reversed: now the model is the lower bound.
    gt, dets = hand_case(reverse=True)
    m = evaluate_detections(make_coco(gt), dets, bounds=True)
    assert m["lower_AP"] == pytest.approx(m["AP"], abs=1e-15)
    assert m["upper_AP"] == pytest.approx((2 * AP_BOTH + 3 * AP_RANK1) / 10, abs=1e-12)


def _cocoeval_bound_ap(coco_gt, dets, upper: bool) -> float:
    """Reference: edit COCOeval's own evalImgs (area all) by the bound rule, one detection at
    a time, then let COCOeval.accumulate() do the rest."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
    for cat in ev.params.catIds:
        entries = [
            e
            for e in ev.evalImgs
            if e is not None and e["category_id"] == cat and e["aRng"] == [0, 1e10]
        ]
        entries.sort(key=lambda e: e["image_id"])
        tps50 = [
            (e["dtScores"][d], i, d)
            for i, e in enumerate(entries)
            for d in range(len(e["dtIds"]))
            if e["dtMatches"][0, d] > 0 and not e["dtIgnore"][0, d]
        ]
        tps50 = [(i, d) for _, i, d in sorted(tps50, key=lambda x: -x[0])]  # stable
        if not upper:
            tps50 = tps50[::-1]
        for t in range(len(ev.params.iouThrs)):
            n = sum(
                int(((e["dtMatches"][t] > 0) & ~e["dtIgnore"][t].astype(bool)).sum())
                for e in entries
            )
            eligible = [(i, d) for i, d in tps50 if not entries[i]["dtIgnore"][t, d]]
            for e in entries:
                e["dtMatches"][t, ~e["dtIgnore"][t].astype(bool)] = 0
            for i, d in eligible[:n]:
                entries[i]["dtMatches"][t, d] = 1
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 2]
    return float(precision[precision > -1].mean())


def _tp_sets_nested(gt, dets) -> bool:
    """Whether every TP at a higher IoU is also a TP at 0.5 (no lower-scored duplicate
    takes over a ground truth at a higher threshold)."""
    coco_gt = make_coco(gt)
    per_class = match_detections(
        ground_truth_table(coco_gt),
        detection_table(load_detections(dets, coco_gt)),
        sorted(coco_gt.getImgIds()),
        sorted(coco_gt.getCatIds()),
    )
    return all((m.tp <= m.tp[0]).all() for m in per_class)


@pytest.mark.parametrize(
    "seed, kwargs",
    [
        (31, {}),
        (32, {"num_images": 14}),
        (33, {}),
        (34, {"crowded_image": True}),
        (35, {"duplicates": False}),
        (36, {"duplicates": False, "num_images": 14}),
    ],
)
def test_bounds_on_random_sets(random_case, seed, kwargs):
    gt, dets = random_case(seed, **kwargs)
    m = evaluate_detections(make_coco(gt), dets, bounds=True)
    assert m["upper_AP"] == pytest.approx(_cocoeval_bound_ap(make_coco(gt), dets, True), abs=1e-15)
    assert m["lower_AP"] == pytest.approx(_cocoeval_bound_ap(make_coco(gt), dets, False), abs=1e-15)
    assert m["upper_AP50"] == pytest.approx(m["AP50"], abs=1e-12)
    assert m["lower_AP50"] == pytest.approx(m["AP50"], abs=1e-12)
    assert m["upper_AP"] > m["lower_AP"]
    assert (m["upper_rho"], m["lower_rho"]) == (1.0, -1.0)  # computed; scores have no ties
    assert m["lower_rho"] <= m["rho"] <= m["upper_rho"]
    # The model lies between the bounds when its TPs at higher IoUs are TPs at 0.5 too. A
    # lower-scored duplicate that takes a ground truth over at a higher IoU (common in the
    # sets with duplicates) can put it below the lower bound (seed 33), since the bounds
    # only move labels among the 0.5 TPs.
    nested = _tp_sets_nested(gt, dets)
    if not kwargs.get("duplicates", True):
        assert nested
    if nested:
        for key in ("AP", "AP75", "AP90"):
            assert m[f"upper_{key}"] >= m[key] - 1e-12 >= m[f"lower_{key}"] - 2e-12


def test_bounds_rho_is_computed_not_fixed(hand_case):
    # Two TPs with equal IoU: the bound's IoU ranks are constant, so its rho is undefined.
    gt, dets = hand_case()
    dets[2]["bbox"] = [200, 0, 100, 72]
    report = evaluate_report(make_coco(gt), dets, bounds=True)
    assert math.isnan(report.metrics["upper_rho"]) and math.isnan(report.metrics["rho"])


def test_toy_example_ap_table_a9():
    # Appendix A: scores 1.0 .. 0.1 for a1..a10, positives a1, a3, a6, a10, 5 ground truths.
    scores = np.linspace(1.0, 0.1, 10)
    positives = [0, 2, 5, 9]

    def ious(values):
        out = np.full(10, np.nan)
        out[positives] = values
        return out

    # C&R1: AP50 .513, AP65 .433, AP80 .333, AP95 .2 -> 0.37.
    # C&R2: .513, .393, .24, 0 -> 0.287 (the paper's Table A.9 prints 0.02 for AP95 though
    # C&R2 has no IoU >= 0.95; its mean 0.29 is the same either way).
    # C&R3: .513, .193, .08, .02 -> 0.202.
    expected = {
        (0.95, 0.80, 0.65, 0.50): 1.48 / 4,
        (0.80, 0.65, 0.50, 0.80): 1.1466667 / 4,
        (0.50, 0.65, 0.80, 0.95): 0.8066667 / 4,
    }
    for values, ap in expected.items():
        assert toy_ap(scores, ious(values), num_gt=5) == pytest.approx(ap, abs=1e-6)
    assert [round(toy_ap(scores, ious(v), 5), 2) for v in expected] == [0.37, 0.29, 0.20]
